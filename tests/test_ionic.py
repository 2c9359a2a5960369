"""Observables of the ionic structure (MALA's target.py): g(r) against ASE and analytic
crystal shells, g₃ against the cuboctahedron of fcc and the ideal gas, S(k) against Bragg's
law, the Ewald energy against pw.x; `malaflow structure`."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf
from typer.testing import CliRunner

import malaflow
from malaflow.cli import app
from malaflow.ionic import (
    minimum_image_radius, radial_distribution, static_structure_factor, three_particle_correlation,
)
from malaflow_plugins.readers.qe import parse_pw_output

A_AL = 4.05


def disordered_al(seed: int = 0) -> Atoms:
    atoms = bulk("Al", "fcc", a=A_AL, cubic=True).repeat(3)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.1, atoms.positions.shape)
    return atoms


def ideal_gas(frames: int, n: int = 100, edge: float = 10.0) -> list[Atoms]:
    rng = np.random.default_rng(1)
    return [Atoms(f"Ar{n}", positions=rng.uniform(0, edge, (n, 3)), cell=[edge] * 3, pbc=True) for _ in range(frames)]


def test_rdf_equals_ases_and_the_crystal_shells():
    atoms = disordered_al()
    r_max = 0.99 * minimum_image_radius(atoms)  # ASE needs the sphere inside the cell
    r, g = radial_distribution(atoms, r_max, 60)
    reference, r_ase = get_rdf(atoms, r_max, 60)
    np.testing.assert_array_equal(r, r_ase)
    assert np.abs(g - reference).max() < 1e-13  # achieved 1.4e-14
    # perfect crystals: the first shells where geometry puts them, 12 nearest neighbours
    fcc = bulk("Al", "fcc", a=A_AL, cubic=True).repeat(2)
    r, g = radial_distribution(fcc, 4.5, 450)
    occupied = r[g > 0]
    assert occupied[:2] == pytest.approx([A_AL / np.sqrt(2), A_AL], abs=0.005)  # bin half-width
    shells = 4 * np.pi / 3 * ((r + 0.005) ** 3 - (r - 0.005) ** 3)
    assert np.sum((g * shells)[r < 3.5]) * len(fcc) / fcc.get_volume() == pytest.approx(12.0, rel=1e-12)
    a, c = 2.29, 3.58  # hcp Be: 6 neighbours in the plane at a, 6 out of it at √(a²/3 + c²/4)
    r, g = radial_distribution(bulk("Be", "hcp", a=a, c=c).repeat((3, 3, 2)), 4.0, 400)
    assert sorted(r[g > 0][:2]) == pytest.approx(sorted([a, np.sqrt(a**2 / 3 + c**2 / 4)]), abs=0.005)


def test_tpcf_counts_the_fcc_cuboctahedron_and_is_one_for_an_ideal_gas():
    fcc = bulk("Al", "fcc", a=A_AL, cubic=True).repeat(2)
    centres, g3 = three_particle_correlation(fcc, 3.2, 16)
    dr, d = 0.2, A_AL / np.sqrt(2)
    b = int(np.ceil(d / dr)) - 1
    density = len(fcc) / fcc.get_volume()
    ideal = 8 * np.pi**2 * centres[b] ** 3 * dr**3 * density**2
    assert g3[b, b, b] * ideal == pytest.approx(48.0, rel=1e-12)  # 24 edges of the cuboctahedron, both orders
    assert np.count_nonzero(g3) == 1  # nothing else within 3.2 Å
    np.testing.assert_array_equal(g3, g3.transpose(1, 0, 2))
    centres, g3 = three_particle_correlation(ideal_gas(20), 4.0, 4)
    for i in (2, 3):  # bins where the whole box satisfies the triangle inequality
        assert g3[i, i, i] == pytest.approx(1.0, abs=0.1)  # achieved 0.955, 1.015


def test_structure_factor_has_bragg_peaks_and_is_one_for_an_ideal_gas():
    fcc = bulk("Al", "fcc", a=A_AL, cubic=True).repeat(2)
    k, s = static_structure_factor(fcc, 6.0, 600)
    at = lambda q: s[int(np.ceil(q / 0.01)) - 1]  # noqa: E731
    for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0)):  # fcc reflections: S = N
        assert at(2 * np.pi * np.linalg.norm(hkl) / A_AL) == pytest.approx(len(fcc), rel=1e-12)
    for hkl in ((0.5, 0, 0), (1, 0, 0), (1, 1, 0)):  # supercell vectors that are not: S = 0
        assert at(2 * np.pi * np.linalg.norm(hkl) / A_AL) < 1e-20
    k, s = static_structure_factor(ideal_gas(5), 8.0, 40)
    assert np.nanmean(s[10:]) == pytest.approx(1.0, abs=0.05)  # achieved 0.99 (std of the bins 0.05)


def test_structure_command(mala_data, tmp_path):
    """A pw.x output: 12 neighbours of hcp Be, the Ewald energy of pw.x; a trajectory; errors."""
    run = mala_data / "Be2" / "Be_snapshot0.out"
    result = CliRunner().invoke(app, ["structure", str(run), "--valence", "Be=2", "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "coordination number 12.00" in result.output
    ewald = float(result.output.split("Ewald (ion–ion) energy:")[1].split()[0])
    ewald_qe = parse_pw_output(run)["energies_ev"]["ewald_contribution"] / 2
    assert ewald == pytest.approx(ewald_qe, abs=1e-5)  # achieved 5e-7 eV/atom (pw.x prints 1e-8 Ry)
    assert (tmp_path / "s.png").stat().st_size > 10_000
    from ase.io import write

    write(tmp_path / "traj.xyz", [disordered_al(s) for s in range(3)])
    result = CliRunner().invoke(app, ["structure", str(tmp_path / "traj.xyz"), "--r-max", "5"])
    assert result.exit_code == 0, result.output
    assert "3 frame(s), 108 atoms" in result.output and "first peak at 2.8" in result.output
    store = tmp_path / "be2.zarr"
    malaflow.write_snapshot(malaflow.read_snapshot(run, reader="qe"), store)
    result = CliRunner().invoke(app, ["structure", str(store)])  # a snapshot: charges from its electrons
    assert result.exit_code == 0, result.output
    assert float(result.output.split("Ewald (ion–ion) energy:")[1].split()[0]) == pytest.approx(ewald, abs=1e-9)
    result = CliRunner().invoke(app, ["structure", str(run), "--valence", "Be:2"])
    assert result.exit_code != 0 and "--valence wants ELEMENT=CHARGE" in str(result.exception)
