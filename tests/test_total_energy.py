"""Total-energy terms against Quantum ESPRESSO's term-by-term output, and the
exchange–correlation functionals against the uniform electron gas."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import malaflow
from malaflow.cli import app
from malaflow.errors import InputFileError, MalaflowError, ParameterError
from malaflow.units import BOHR_ANGSTROM, HARTREE_EV
from malaflow_plugins.readers import qe
from malaflow.physics import energy as te
from malaflow.physics.ewald import ewald
from malaflow.physics.pseudopotential import read_upf, simpson

from conftest import DEMO_DATA

UPF = DEMO_DATA / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"


@pytest.mark.parametrize("snapshot", range(4))
def test_ewald_matches_qe_on_be2(mala_data, snapshot):
    snap = malaflow.read_snapshot(mala_data / "Be2" / f"Be_snapshot{snapshot}.info.json")
    ours = ewald(snap.positions / BOHR_ANGSTROM, [2.0, 2.0], snap.cell / BOHR_ANGSTROM) * HARTREE_EV
    # QE prints Ry to 8 decimals (1.4e-7 eV); 4.4e-7 eV measured (snapshot 0)
    assert ours == pytest.approx(snap.reference["ewald_contribution"], abs=4e-6)


def test_ewald_matches_qe_on_al36(mala_data):
    out = qe.parse_pw_output(mala_data / "Al36" / "Al.pw.scf.out")
    z = read_upf(mala_data / "Al36" / "Al.pbe-n-rrkjus_psl.1.0.0.UPF").z_valence
    ours = ewald(np.asarray(out["positions"]) / BOHR_ANGSTROM, [z] * 36, np.asarray(out["cell"]) / BOHR_ANGSTROM)
    assert z == 3.0
    # 2.3e-5 eV measured (36 atoms, 108 charges)
    assert ours * HARTREE_EV == pytest.approx(out["energies_ev"]["ewald_contribution"], abs=1e-4)


def test_hartree_and_xc_from_qe_density(mala_data, capsys):
    """QE's own density of Be2 snapshot 0 (18×18×27, augmentation charges included):
    Hartree and xc (PBE with the core correction) as pw.x's: −6e-8 and 1.7e-5 eV measured."""
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.info.json")
    density = np.load(mala_data / "Be2" / "Be_snapshot0.dens.npy").reshape(snap.grid_shape)
    terms = te.energy_terms(density, snap.cell, snap.positions, snap.numbers, {"Be": read_upf(UPF)},
                            snap.reference["band_energy"], snap.reference["entropy_contribution"], 160.0)
    d_h = terms.hartree - snap.reference["hartree_contribution"]
    d_xc = terms.xc - snap.reference["xc_contribution"]
    with capsys.disabled():
        print(f"\n  Be2 snapshot 0 vs QE: Hartree {1e3 * d_h:+.4f} meV, xc {1e3 * d_xc:+.4f} meV, "
              f"Ewald {1e3 * (terms.ewald - snap.reference['ewald_contribution']):+.4f} meV")
    assert abs(d_h) < 1e-6 and abs(d_xc) < 1e-4
    # with QE's one-electron term (which holds its SCF input potential, see total_energy.py)
    # the terms add up to QE's total free energy
    total = snap.reference["one_electron_contribution"] + terms.hartree + terms.xc + terms.ewald \
        + snap.reference["entropy_contribution"]
    assert total == pytest.approx(snap.reference["total_energy"], abs=1e-4)  # 1.7e-5 eV measured


def test_core_density_holds_the_core_charge():
    """The G = 0 coefficient is the integral: Σ_grid n_core ΔV = N_atoms · 4π∫r²ρ_c dr."""
    pp = read_upf(UPF)
    grid = te.grid_from(np.diag([4.0, 4.5, 5.0]), (20, 24, 25))
    positions = np.array([[0.3, 0.2, 0.1], [2.0, 2.4, 2.6]]) / BOHR_ANGSTROM
    core = te.core_density(grid, positions, [pp, pp], None)
    per_atom = 4 * np.pi * simpson(pp.r**2 * pp.core_density, pp.rab)
    assert core.sum() * grid.volume / core.size == pytest.approx(2 * per_atom, rel=1e-10)
    assert 0.3 < per_atom < 2.0  # a partial core of Be's 1s² shell


def _uniform_gas(functional: str, rs: float) -> float:
    """E_xc per electron (Hartree) of a uniform density through our xc()."""
    n = 3.0 / (4.0 * math.pi * rs**3)
    grid = te.grid_from(np.eye(3) * 3.0, (6, 6, 6))
    density = np.full(grid.shape, n)
    energy, _ = te.xc(density, np.zeros_like(density), grid, functional)
    return energy / (n * grid.volume)


@pytest.mark.parametrize("rs", [1.0, 2.0, 5.0])
def test_xc_of_the_uniform_electron_gas(rs):
    """Exchange (−0.458165/r_s) plus correlation of Perdew–Zunger 1981 (LDA) and of
    Perdew–Wang 1992 (PBE at zero gradient), from their published parametrisations."""
    ex = -0.75 * (9.0 / (4.0 * math.pi**2)) ** (1.0 / 3.0) / rs
    if rs >= 1.0:
        ec_pz = -0.1423 / (1 + 1.0529 * math.sqrt(rs) + 0.3334 * rs)
    a, a1, b1, b2, b3, b4 = 0.031091, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294
    ec_pw = -2 * a * (1 + a1 * rs) * math.log(1 + 1 / (2 * a * (b1 * rs**0.5 + b2 * rs + b3 * rs**1.5 + b4 * rs**2)))
    assert _uniform_gas("LDA", rs) == pytest.approx(ex + ec_pz, abs=1e-6)
    assert _uniform_gas("PBE", rs) == pytest.approx(ex + ec_pw, abs=2e-6)


def test_bad_input(tmp_path):
    text = UPF.read_text()
    no_valence = tmp_path / "a.UPF"
    no_valence.write_text(text.replace('z_valence="2.000000000000e0"', ""))
    with pytest.raises(InputFileError, match=r"a.UPF:\d+: PP_HEADER lacks z_valence"):
        read_upf(no_valence)
    no_core = tmp_path / "b.UPF"
    no_core.write_text(text.split("<PP_NLCC")[0] + "<PP_LOCAL" + text.split("<PP_LOCAL", 1)[1])
    with pytest.raises(InputFileError, match="no <PP_NLCC>"):
        read_upf(no_core)
    grid = te.grid_from(np.eye(3) * 3.0, (4, 4, 4))
    with pytest.raises(ParameterError, match="functional 'SCAN' is not supported"):
        te.xc(np.ones(grid.shape), np.zeros(grid.shape), grid, "SCAN")
    density = np.full((4, 4, 4), 0.01)
    density[0, 0, :] = -0.05
    with pytest.raises(MalaflowError, match="negative regions"):
        te.energy_terms(density, np.eye(3) * 3.0, [[0, 0, 0]], [4], {"Be": read_upf(UPF)}, 0.0, 0.0, None)


def test_observables_cli_prints_the_energy_terms(tmp_path):
    """`malaflow observables` on the demo snapshot: every term beside QE's. The Ewald
    term only depends on the atoms and must agree; the Fermi level and band energy of
    this LDOS are MALA 1.4's (analytic scheme); the total free energy from the 11-point,
    5 eV-broadened LDOS is 0.219 eV above pw.x's (measured: the data's limit, not the code's)."""
    snap = malaflow.read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    store = malaflow.write_snapshot(snap, tmp_path / "be0.zarr")
    result = CliRunner().invoke(app, ["observables", str(store)])
    assert result.exit_code == 0, result.output
    rows = {line[:24].strip(): line.split()[-3:] for line in result.output.splitlines()[1:] if "(eV)" in line}
    assert abs(float(rows["Ewald (eV)"][2])) < 4e-6  # QE prints 1.4e-7 eV steps; 4.4e-7 measured
    assert float(rows["Fermi energy (eV)"][0]) == pytest.approx(10.2407, abs=5e-5)  # MALA: 10.2407 (4 decimals)
    assert float(rows["band energy (eV)"][0]) == pytest.approx(12.4471, abs=5e-5)  # MALA: 12.4471 (4 decimals)
    ours, qe_total = (float(v) for v in rows["total free energy (eV)"][:2])
    assert qe_total == pytest.approx(-73.03705522, abs=1e-6)  # pw.x total of Be_snapshot0.out
    assert 0.1 < ours - qe_total < 0.3


def test_total_energy_of_a_converged_qe_run(capsys):
    """A tightly converged pw.x run of Be2 snapshot 0 (tests/data/be2-converged): from
    its density and its band energy (eigenvalues, occupied at the Fermi level that holds
    4 electrons) every term and the total free energy equal QE's: one-electron −0.0154,
    Hartree −0.0000, xc +0.0158, Ewald +0.0006, total +0.0012 meV measured."""
    from scipy.optimize import brentq

    from malaflow.physics.fermi import fermi_dirac
    from conftest import REPO

    data = REPO / "tests" / "data" / "be2-converged"
    out = qe.parse_pw_output(data / "scf.out")
    cube = qe.read_cube(data / "dens.cube")
    density = np.asarray(cube["data"]).reshape(cube["shape"]) / BOHR_ANGSTROM**3  # e/Bohr³ → e/Å³
    kt = out["degauss_ry"] * 13.605693123
    eig, w = out["eigenvalues"], out["k_weights"] * 2.0 / out["k_weights"].sum()
    mu = brentq(lambda m: float((w[:, None] * fermi_dirac(eig, m, kt)).sum()) - out["n_electrons"], 0.0, 20.0)
    band = float((w[:, None] * fermi_dirac(eig, mu, kt) * eig).sum())
    ref = out["energies_ev"]
    terms = te.energy_terms(density, np.asarray(out["cell"]), np.asarray(out["positions"]), [4, 4],
                            {"Be": read_upf(UPF)}, band, ref["entropy_contribution"], out["ecutrho_ry"])
    pairs = {"one-electron": (terms.one_electron, ref["one_electron_contribution"]),
             "Hartree": (terms.hartree, ref["hartree_contribution"]), "xc": (terms.xc, ref["xc_contribution"]),
             "Ewald": (terms.ewald, ref["ewald_contribution"]), "total": (terms.total_energy, ref["total_energy"])}
    with capsys.disabled():
        print("\n  converged Be2 vs QE: " + ", ".join(f"{k} {1e3 * (a - b):+.4f} meV" for k, (a, b) in pairs.items()))
    for name, (ours, theirs) in pairs.items():
        assert ours == pytest.approx(theirs, abs=2e-5 if name == "total" else 1e-4), name


def test_pseudopotentials_are_checked_by_content(tmp_path):
    """A UPF of the right name is used only if it is the file the DFT run read: by the
    checksum the QE reader records; the copies shipped with malaflow need that checksum."""
    from malaflow.observables import find_pseudopotentials
    from malaflow.readers import sha256

    ds = malaflow.read_snapshot(DEMO_DATA / "Be_snapshot0.info.json").to_dataset()
    ds.attrs["provenance"] = {}  # as if the raw files were elsewhere: only the shipped copy is left
    with pytest.raises(MalaflowError, match="shipped with malaflow; the snapshot records no checksum"):
        find_pseudopotentials(ds)
    ds.attrs["pseudopotential_sha256"] = {"Be": sha256(UPF)}
    assert find_pseudopotentials(ds)["Be"].z_valence == 2.0  # the shipped copy, verified
    (tmp_path / UPF.name).write_text(UPF.read_text().replace('z_valence="2.000000000000e0"', 'z_valence="3.0"'))
    assert find_pseudopotentials(ds, pseudo_dir=tmp_path)["Be"].z_valence == 2.0  # the edited one passed over
    ds.attrs["pseudopotential_sha256"] = {"Be": "0" * 64}
    with pytest.raises(MalaflowError, match="other content than the file the DFT run read"):
        find_pseudopotentials(ds, pseudo_dir=tmp_path)


def test_qe_reader_records_the_pseudopotential_checksums(tmp_path):
    """pw.x prints the UPF path it read; where that file exists the reader hashes it."""
    from malaflow.readers import sha256
    from conftest import REPO

    data = REPO / "tests" / "data" / "be2-converged"
    text = (data / "scf.out").read_text()
    printed = re.search(r"PseudoPot\. # 1 for Be read from file:\n\s*(\S+)", text).group(1)
    (tmp_path / "pseudo").mkdir()
    shutil.copy(UPF, tmp_path / "pseudo" / UPF.name)
    (tmp_path / "scf.out").write_text(text.replace(printed, str(tmp_path / "pseudo" / UPF.name)))
    snap = malaflow.read_snapshot(tmp_path / "scf.out", reader="qe")
    assert snap.attrs["pseudopotential_sha256"] == {"Be": sha256(UPF)}
