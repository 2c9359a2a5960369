"""Forces from the predicted LDOS (malaflow.forces, the Calculator): each derivative
against central finite differences of the energy it differentiates — the energy terms
themselves being checked against QE in test_total_energy.py."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import malaflow
from malaflow.catalog import Catalog
from malaflow.errors import MalaflowError
from malaflow.physics import energy as te
from malaflow.physics.dos import energy_weights, occupation_slope_weights
from malaflow.physics.ewald import ewald, ewald_energy_forces
from malaflow.physics.gradients import core_forces, density_gradients
from malaflow.physics.pseudopotential import read_upf
from malaflow.units import BOHR_ANGSTROM, HARTREE_EV

from conftest import DEMO_DATA, REPO, SPLITS, training_config

UPF = DEMO_DATA / "Be.pbe-n-rrkjus_psl.1.0.0.UPF"
EV_PER_HARTREE_BOHR = HARTREE_EV / BOHR_ANGSTROM


def central(f, x: np.ndarray, index: tuple, h: float) -> float:
    """(f(x + h e) − f(x − h e)) / 2h along one entry of x."""
    up, down = x.copy(), x.copy()
    up[index] += h
    down[index] -= h
    return (f(up) - f(down)) / (2 * h)


# --------------------------------------------------------------------------- physics


def test_ewald_forces_are_the_gradient_of_the_ewald_energy():
    rng = np.random.default_rng(0)
    cell = np.array([[7.0, 0, 0], [1.0, 6.5, 0], [0.5, 0.3, 8.0]])  # triclinic, Bohr
    pos, q = rng.random((5, 3)) @ cell, [2.0, 2.0, 3.0, 1.0, 3.0]
    energy, forces = ewald_energy_forces(pos, q, cell)
    assert energy == ewald(pos, q, cell)
    fd = np.array([[-central(lambda p: ewald(p, q, cell), pos, (i, k), 1e-5) for k in range(3)] for i in range(5)])
    np.testing.assert_allclose(forces, fd, atol=2e-9)  # achieved 2e-10 Hartree/Bohr on forces up to 2.4
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-13)


def test_occupation_slope_weights_are_the_mu_derivative():
    e = np.linspace(-5, 5, 41)
    for scheme in ("analytic", "quadrature"):
        for mu in (0.3, -4.9, 5.2):
            fd = (energy_weights(e, mu + 1e-5, 933, "fermi", 0, scheme)
                  - energy_weights(e, mu - 1e-5, 933, "fermi", 0, scheme)) / 2e-5
            # achieved ≤ 2.6e-9 on weights up to 0.7
            np.testing.assert_allclose(occupation_slope_weights(e, mu, 933, scheme), fd, atol=3e-8)


@pytest.fixture(scope="module")
def be2_density():
    """The converged Be2 density of QE (tests/data/be2-converged) with its atoms."""
    from malaflow.plugins import get_plugin

    qe = __import__(get_plugin("readers", "qe").__module__, fromlist=["parse_pw_output", "read_cube"])
    data = REPO / "tests" / "data" / "be2-converged"
    out = qe.parse_pw_output(data / "scf.out")
    cube = qe.read_cube(data / "dens.cube")
    density = np.asarray(cube["data"]).reshape(cube["shape"]) / BOHR_ANGSTROM**3
    return density, np.asarray(out["cell"]), np.asarray(out["positions"]), out["ecutrho_ry"]


@pytest.mark.parametrize("functional", ["PBE", "PZ"])
def test_density_derivative_of_the_double_counting_terms(be2_density, functional):
    """δE_dc/δn = −v_H − K, K the xc kernel applied to n (libxc's second derivatives):
    the directional derivative along a random density change, against finite differences."""
    density, cell, positions, ecutrho = be2_density
    pp = {"Be": dataclasses.replace(read_upf(UPF), functional=functional)}

    def e_dc(n: np.ndarray) -> float:
        t = te.terms_of(te.density_fields(n, cell, positions, [4, 4], pp, ecutrho), 0.0, 0.0)
        return t.one_electron + t.hartree + t.xc

    fields = te.density_fields(density, cell, positions, [4, 4], pp, ecutrho)
    g, _ = density_gradients(fields)
    delta = np.random.default_rng(1).standard_normal(density.shape) * 0.01 * density.mean()
    voxel = abs(np.linalg.det(cell)) / density.size
    analytic = voxel * float((g * delta).sum()) * HARTREE_EV
    fd = (e_dc(density + 1e-3 * delta) - e_dc(density - 1e-3 * delta)) / 2e-3
    assert fd == pytest.approx(analytic, rel=1e-6)  # achieved 1.5e-8 (PBE)


def test_core_correction_forces(be2_density):
    """With the valence density held, moving an atom moves its core-correction density:
    −∂E_dc/∂R against finite differences."""
    density, cell, positions, ecutrho = be2_density
    pp = {"Be": read_upf(UPF)}

    def e_dc(pos: np.ndarray) -> float:
        t = te.terms_of(te.density_fields(density, cell, pos, [4, 4], pp, ecutrho), 0.0, 0.0)
        return t.one_electron + t.hartree + t.xc

    fields = te.density_fields(density, cell, positions, [4, 4], pp, ecutrho)
    forces = core_forces(fields, density_gradients(fields)[1]) * EV_PER_HARTREE_BOHR
    for i, k in [(0, 0), (0, 1), (1, 2)]:
        # achieved ≤ 2.1e-9 eV/Å on components of 1e-3–8e-3 eV/Å
        assert forces[i, k] == pytest.approx(-central(e_dc, positions, (i, k), 1e-4), abs=2e-8)


@pytest.mark.parametrize("params", [{"twojmax": 4}, {"twojmax": 6, "bzeroflag": 1, "quadraticflag": 1}])
def test_bispectrum_pullback(params):
    """The torch plugin's vector–Jacobian product (autograd through the Wigner matrices,
    the contraction's adjoint by hand) against finite differences of its features."""
    from malaflow.descriptors import Structure, get_descriptor, point_batches

    d = get_descriptor("bispectrum_torch", params)
    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.rattle(0.05, seed=1)
    s = Structure.from_any(atoms)
    block = (slice(0, 4), slice(0, 4), slice(0, 4))
    _, points, positions, numbers, _ = next(point_batches(d, s, (18, 18, 27), block, 64))
    values, pullback = d.compute_with_pullback(points, positions, numbers, s)
    np.testing.assert_array_equal(values, d.compute(points, positions, numbers, s))
    seed = np.random.default_rng(0).standard_normal(values.shape)
    grad = pullback(seed)
    i = int(np.argmax(abs(grad).sum(axis=1)))
    for k in range(3):
        fd = central(lambda p: float((seed * d.compute(points, p, numbers, s)).sum()), positions, (i, k), 1e-5)
        assert grad[i, k] == pytest.approx(fd, abs=1e-8 * abs(grad[i]).max())  # achieved 1.8e-10 relative


@pytest.mark.parametrize("params", [{"twojmax": 4}, {"twojmax": 6, "bzeroflag": 1, "quadraticflag": 1},
                                    {"twojmax": 10, "radelem": {"Al": 0.5, "Be": 0.42}, "wj": {"Al": 1.0, "Be": 0.8}}])
def test_compiled_pullback_equals_the_torch_pullback(params):
    """The compiled adjoint kernel (bispectrum) against autograd (bispectrum_torch, itself
    checked against finite differences above), on a triclinic two-element cell."""
    from ase import Atoms
    from malaflow.descriptors import Structure, get_descriptor, point_batches

    rng = np.random.default_rng(2)
    cell = np.array([[5.0, 0.0, 0.0], [1.2, 4.6, 0.0], [0.7, -0.5, 5.3]])
    atoms = Atoms("Al3Be2", scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)
    s = Structure.from_any(atoms)
    compiled, torch_plugin = get_descriptor("bispectrum", params), get_descriptor("bispectrum_torch", params)
    block = (slice(0, 6), slice(0, 5), slice(0, 4))
    _, points, positions, numbers, _ = next(point_batches(compiled, s, (12, 11, 13), block, 120))
    values, pullback = compiled.compute_with_pullback(points, positions, numbers, s)
    expected, torch_pullback = torch_plugin.compute_with_pullback(points, positions, numbers, s)
    np.testing.assert_allclose(values, expected, rtol=1e-11)
    seed = rng.standard_normal(values.shape)
    grad, reference = pullback(seed), torch_pullback(seed)
    assert abs(reference).max() > 1.0
    np.testing.assert_allclose(grad, reference, atol=1e-13 * abs(reference).max())  # achieved 2.5e-15 relative


def qe_force_block(path: Path, title: str, n_atoms: int) -> np.ndarray:
    """A block of per-atom forces (Ry/Bohr) printed by pw.x under ``title`` (read here
    line by line, independently of the qe reader)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    rows = [line.split("force =")[1].split() for line in lines[start + 1 :] if "force =" in line][:n_atoms]
    return np.array(rows, dtype=float)


@pytest.mark.parametrize("name, n_atoms, z, tol", [
    ("Be2/Be_snapshot0.out", 2, 2.0, 1e-7),  # achieved 1.7e-8 Ry/Bohr (pw.x prints 8 decimals)
    ("Al36/Al.pw.scf.out", 36, 3.0, 1e-5),  # achieved 1.1e-6 on forces up to 1.3 (positions printed to 1e-7 alat)
])
def test_ewald_forces_match_the_ionic_forces_of_pw(mala_data, name, n_atoms, z, tol):
    from malaflow.plugins import get_plugin

    qe = __import__(get_plugin("readers", "qe").__module__, fromlist=["parse_pw_output"])
    path = mala_data / name
    pw = qe.parse_pw_output(path)
    _, forces = ewald_energy_forces(pw["positions"] / BOHR_ANGSTROM, [z] * n_atoms, pw["cell"] / BOHR_ANGSTROM)
    np.testing.assert_allclose(2.0 * forces, qe_force_block(path, "The ionic contribution", n_atoms), atol=tol)
    # the reader's forces: the first block, in eV/Å; pw.x's "Total force" is their norm in Ry/Bohr
    ry_bohr = qe_force_block(path, "Forces acting on atoms", n_atoms)
    np.testing.assert_allclose(pw["forces"], ry_bohr * HARTREE_EV / 2 / BOHR_ANGSTROM, rtol=1e-12)
    total = float(next(line for line in path.read_text().splitlines() if "Total force =" in line).split()[3])
    assert np.sqrt((ry_bohr**2).sum()) == pytest.approx(total, abs=1e-6)


def test_core_correction_forces_match_pw(mala_data):
    """At self-consistency δE/δn_c is v_xc: with it, the core-correction forces of the
    Be2 density equal pw.x's "core correction contribution"."""
    from malaflow.plugins import get_plugin

    qe = __import__(get_plugin("readers", "qe").__module__, fromlist=["parse_pw_output"])
    path = mala_data / "Be2" / "Be_snapshot0.out"
    pw = qe.parse_pw_output(path)
    density = np.load(DEMO_DATA / "Be_snapshot0.dens.npy").reshape(18, 18, 27)
    fields = te.density_fields(density, pw["cell"], pw["positions"], [4, 4], {"Be": read_upf(UPF)}, pw["ecutrho_ry"])
    ours = 2.0 * core_forces(fields, fields.v_xc)  # Ry/Bohr
    # achieved 1.4e-7 Ry/Bohr on forces of 1e-3 (the shipped run is converged to 2e-3 Ry only)
    np.testing.assert_allclose(ours, qe_force_block(path, "The core correction contribution", 2), atol=1e-6)


# --------------------------------------------------------------------------- the chain


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory) -> Path:
    """A small sigmoid network on Be2 bispectrum (twojmax 4) descriptors: a smooth energy
    surface (a ReLU network's has kinks, where finite differences and forces part)."""
    root = tmp_path_factory.mktemp("forces")
    shutil.copytree(DEMO_DATA, root / "raw")
    cat = Catalog(root / "catalog.yaml")
    for i, split in enumerate(SPLITS):
        cat.add(root / "raw" / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split, chunks=9)
    descriptor = {"plugin": "bispectrum", "params": {"twojmax": 4}}
    malaflow.compute_descriptors([cat.store_path(r.id) for r in cat.records], descriptor["plugin"],
                                 params=descriptor["params"], chunks=9, progress=False)
    cfg = training_config(cat, root / "model", descriptor=descriptor, epochs=3,
                          model={"plugin": "feedforward", "params": {"layers": [32], "activation": "sigmoid"}})
    return malaflow.train(cfg, progress=False)


def energy_of_positions(model, atoms, chunks: int):
    """F(positions) of the model for ``atoms``' cell and elements."""
    from ase import Atoms

    return lambda p: malaflow.forces.energy_state(
        model, Atoms(atoms.numbers, p, cell=atoms.cell, pbc=True), chunks=chunks).free_energy


def test_forces_are_minus_the_gradient_of_the_free_energy_be2(smooth_model, monkeypatch):
    model = malaflow.load_model(smooth_model)
    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.rattle(0.05, seed=3)
    atoms.calc = malaflow.Calculator(model, chunks=9)
    forces = atoms.get_forces()
    assert atoms.calc.results["kind"] == "total" and atoms.calc.evaluations == 1
    assert abs(forces).max() > 0.1
    energy = energy_of_positions(model, atoms, 9)
    for i in range(2):
        for k in range(3):
            fd = -central(energy, atoms.positions, (i, k), 5e-4)
            assert forces[i, k] == pytest.approx(fd, abs=3e-4)  # achieved 2.4e-5 eV/Å (FD error ∝ h²)
    # the features kept from the energy pass (small grids) or computed again: the same forces
    assert "descriptors" in atoms.calc.state.predicted
    monkeypatch.setattr(malaflow.forces, "KEEP_BYTES", 0)
    again = malaflow.Calculator(model, chunks=9)
    np.testing.assert_allclose(again.get_forces(atoms), forces, rtol=1e-12, atol=1e-12)
    assert "descriptors" not in again.state.predicted


def test_forces_of_an_8_atom_cell_and_the_net_force(smooth_model, capsys):
    """On an 8-atom cell: forces against finite differences; the net force (the grid's
    egg-box effect) equals minus the derivative of the energy under a rigid shift of all
    atoms, and is removed on request as pw.x does."""
    model = malaflow.load_model(smooth_model)
    atoms = bulk("Be", "hcp", a=2.26, c=3.57).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=3)
    calc = malaflow.Calculator(model, chunks=18)
    atoms.calc = calc
    forces = atoms.get_forces()
    net = calc.results["net_force"]
    np.testing.assert_allclose(net, forces.sum(axis=0), atol=1e-12)
    energy = energy_of_positions(model, atoms, 18)
    for i, k in [(3, 0), (5, 2), (6, 1)]:
        fd = -central(energy, atoms.positions, (i, k), 5e-4)
        assert forces[i, k] == pytest.approx(fd, abs=3e-4)  # achieved 1.4e-7 eV/Å
    h = 5e-4
    shift = -(energy(atoms.positions + [0, 0, h]) - energy(atoms.positions - [0, 0, h])) / (2 * h)
    assert net[2] == pytest.approx(shift, abs=3e-5)  # achieved 2.5e-7 eV/Å (x component)
    with capsys.disabled():
        print(f"\n  8-atom Be cell, grid {calc.state.predicted.attrs['grid_shape']}: net force "
              f"{np.linalg.norm(net):.2e} eV/Å against a largest force of {abs(forces).max():.3f} eV/Å")
    removed = malaflow.Calculator(model, chunks=18, remove_net_force=True)
    atoms.calc = removed
    np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces - net / 8, atol=1e-9)


def test_forces_need_differentiable_descriptors(be2_catalog, tmp_path):
    """A model on descriptors no installed plugin can differentiate says so."""
    cfg = training_config(be2_catalog, tmp_path / "gauss", epochs=1, descriptor={"plugin": "gaussian", "params": {}},
                          model={"plugin": "feedforward", "params": {"layers": [8]}})
    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.calc = malaflow.Calculator(malaflow.train(cfg, progress=False))
    atoms.get_potential_energy()
    with pytest.raises(MalaflowError, match="no installed implementation of the feature set 'gaussian'"):
        atoms.get_forces()


def test_velocity_verlet_with_the_calculator_conserves_energy(smooth_model):
    """A few NVE steps of ASE's velocity Verlet on Be2: F + kinetic energy stays put
    (the NVE drift over hundreds of steps is a benchmark: benchmarks/forces.py)."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.rattle(0.02, seed=5)
    atoms.calc = malaflow.Calculator(malaflow.load_model(smooth_model), chunks=9)
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    total = []
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_potential_energy(force_consistent=True) + atoms.get_kinetic_energy()))
    dyn.run(4)
    assert atoms.calc.evaluations == 5  # one prediction per configuration, forces from the same
    assert np.ptp(total) < 3e-4  # achieved 2.9e-5 eV over 4 steps of 0.5 fs


def test_generation_asks_pw_for_forces_only_when_told(mala_data, tmp_path):
    """``qe: {forces: true}`` adds tprnfor (other configs keep their input hash, so
    finished snapshots stay valid); the qe reader keeps pw.x's forces with the snapshot."""
    from malaflow.generate import QESettings, pw_input

    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    plain = QESettings(pseudo_dir=str(DEMO_DATA), pseudopotentials={"Be": UPF.name})
    assert "tprnfor" not in pw_input(atoms, plain, 298.0)
    assert "tprnfor = .true." in pw_input(atoms, dataclasses.replace(plain, forces=True), 298.0)
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out")
    # pw.x's −0.01587068, 0.00368364, 0.00008257 Ry/Bohr (and opposite), × 13.6057/0.529177 by hand
    expected = [[-0.408052, 0.094710, 0.002123], [0.408052, -0.094710, -0.002123]]
    np.testing.assert_allclose(snap.attrs["dft_forces"], expected, atol=1e-6)
    info = malaflow.read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")  # MALA's record of the same run
    np.testing.assert_allclose(info.attrs["dft_forces"], snap.attrs["dft_forces"], rtol=1e-6)


def test_md_and_monte_carlo_example_runs(smooth_model, tmp_path):
    """examples/md-be16.py: Langevin MD with forces, Metropolis MC, the RDF plot."""
    import subprocess
    import sys

    from ase.io import read

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "md-be16.py"), str(smooth_model),
                           "--md-steps", "1", "--mc-steps", "2", "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Monte Carlo: 2 moves" in proc.stdout and (out / "rdf.png").stat().st_size > 10_000
    md = read(out / "md.traj", ":")
    assert len(md) == 2 and len(md[0]) == 16
    assert not np.allclose(md[-1].positions, md[0].positions)


def test_band_energy_forces_without_pseudopotentials(smooth_model, tmp_path):
    """Without the UPF files the Calculator's energy is E_b − TS (kind "band"), and its
    forces are that energy's gradient: the grand-potential weights alone."""
    bare = tmp_path / "bare"
    shutil.copytree(smooth_model, bare, ignore=shutil.ignore_patterns("*.UPF"))
    forces_against_finite_differences(malaflow.load_model(bare), 3, "band")


def forces_against_finite_differences(model, seed: int, kind: str):
    """A rattled Be2 cell with the model's calculator: its forces against central
    differences of its own free energy (of ``kind``), two components; the cell."""
    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = malaflow.Calculator(model, chunks=9)
    forces = atoms.get_forces()
    assert atoms.calc.results["kind"] == kind
    energy = energy_of_positions(model, atoms, 9)
    for i, k in ((0, 0), (1, 2)):
        assert forces[i, k] == pytest.approx(-central(energy, atoms.positions, (i, k), 5e-4), abs=3e-4)
    return atoms


def test_an_ensembles_forces_and_energy_uncertainty(smooth_model):
    """An ensemble's forces are −∂F/∂R of the free energy of its members' mean LDOS (finite
    differences); its energy_uncertainty is the spread of the members' own free energies,
    each from a calculator of that member alone."""
    import torch

    one, other = malaflow.load_model(smooth_model), malaflow.load_model(smooth_model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a second member: the same network, its weights perturbed
        for p in other.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    atoms = forces_against_finite_differences(malaflow.EnsembleModel([one, other]), 4, "total")
    alone = [malaflow.Calculator(m, chunks=9).get_potential_energy(atoms, force_consistent=True)
             for m in (one, other)]
    assert abs(alone[0] - alone[1]) > 1e-3  # the members differ
    assert atoms.calc.results["energy_uncertainty"] == pytest.approx(np.std(alone), rel=1e-8)  # bit for bit here
    assert atoms.calc.results["fermi_level_uncertainty"] > 0
