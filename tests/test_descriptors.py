"""Descriptor plugins: LAMMPS bispectrum against MALA's files and symmetry, the gaussian
density against a brute-force sum and its normalisation, chunk-wise runs into stores."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from typer.testing import CliRunner

import malaflow
from malaflow import compute_descriptors, descriptor_grid, read_snapshot, write_snapshot
from malaflow.cli import app
from malaflow.descriptors import Descriptor, Structure, compute_block, get_descriptor, param
from malaflow.errors import ParameterError, PluginError, StoreError
from malaflow.grid import voxel_volume
from malaflow_plugins.descriptors.bispectrum import BispectrumDescriptor as BispectrumCompiled
from malaflow_plugins.descriptors.bispectrum_lammps import BispectrumLammpsDescriptor
from malaflow_plugins.descriptors.snap import n_bispectrum
from malaflow_plugins.descriptors.gaussian import GaussianDescriptor

from conftest import DEMO_DATA, at_points, mala_bispectrum

runner = CliRunner()


def feature_error(values: np.ndarray, reference: np.ndarray) -> float:
    """Largest deviation relative to each feature's scale (max |reference| over the grid)."""
    scale = np.abs(reference).reshape(-1, reference.shape[-1]).max(axis=0)
    return float((np.abs(values - reference) / scale).max())


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


TRICLINIC = np.array([[3.1, 0.0, 0.0], [0.9, 2.8, 0.0], [-0.7, 0.6, 3.3]])


def triclinic_structure(seed: int = 1, elements=(4, 4, 4)) -> Structure:
    frac = np.random.default_rng(seed).random((len(elements), 3))
    return Structure.build(frac @ TRICLINIC, elements, TRICLINIC)


# --------------------------------------------------------------------------- bispectrum (LAMMPS)


def test_feature_count():
    assert [n_bispectrum(t) for t in (0, 2, 4, 6, 10)] == [1, 5, 14, 30, 91]
    s = triclinic_structure()
    assert BispectrumLammpsDescriptor({"quadraticflag": 1, "twojmax": 2}).n_features(s) == 5 + 15


def test_bispectrum_equals_mala_reference_on_all_be2_snapshots(mala_data):
    """LAMMPS 2025.7 reproduces MALA's .in.npy files: any larger difference is a bug in
    grid ordering, cell handling or parameters. All four snapshots run as parallel tasks."""
    snaps = [read_snapshot(mala_data / "Be2" / f"Be_snapshot{i}.info.json", reader="mala") for i in range(4)]
    for snap in snaps:
        snap.descriptors.clear()  # compute from the atoms only
    computed = compute_descriptors(snaps, "bispectrum_lammps", progress=False)
    for i, values in enumerate(computed):
        index, reference = mala_bispectrum(mala_data, i)
        assert values.shape == (18, 18, 27, 91)
        assert feature_error(at_points(values.values, index), reference) < 5e-7, f"snapshot {i}"  # 5.8e-8 measured


@pytest.mark.parametrize("cell", [TRICLINIC, np.diag([3.2, 2.9, 3.6])], ids=["triclinic", "orthorhombic"])
def test_bispectrum_is_rotation_invariant(cell):
    """A rotated copy of the cell (no longer in LAMMPS's orientation) gives the same
    features at the same fractional grid points."""
    frac = np.random.default_rng(2).random((3, 3))
    d = BispectrumLammpsDescriptor({"twojmax": 4})
    grid = (5, 4, 6)
    reference = d.compute_grid(Structure.build(frac @ cell, [4, 4, 4], cell), grid)
    rot = random_rotation(3)
    rotated_cell = cell @ rot.T
    rotated = d.compute_grid(Structure.build(frac @ rotated_cell, [4, 4, 4], rotated_cell), grid)
    assert feature_error(rotated, reference) < 1e-9


def test_bispectrum_sheared_basis_of_the_same_crystal():
    """An orthorhombic crystal described by the triclinic basis (a1, a2 + a1, a3 − a2 + a1):
    the same lattice and, with 4 points per axis, the same grid points, so the features
    are the orthorhombic ones re-indexed — checks LAMMPS's tilt factors (here larger
    than half the box) against a cell without any."""
    ortho = np.diag([3.2, 2.9, 3.6])
    frac = np.random.default_rng(7).random((3, 3))
    d = BispectrumLammpsDescriptor({"twojmax": 4})
    reference = d.compute_grid(Structure.build(frac @ ortho, [4, 4, 4], ortho), (4, 4, 4))
    sheared = np.array([ortho[0], ortho[1] + ortho[0], ortho[2] - ortho[1] + ortho[0]])
    values = d.compute_grid(Structure.build(frac @ ortho, [4, 4, 4], sheared), (4, 4, 4))
    i, j, k = np.meshgrid(np.arange(4), np.arange(4), np.arange(4), indexing="ij")
    assert feature_error(values, reference[(i + j + k) % 4, (j - k) % 4, k]) < 1e-9


def test_bispectrum_translation_by_a_grid_step_rolls_the_grid():
    """Moving every atom by a1/nx must move the features by one grid point along x —
    this fixes the grid ordering; one atom is placed so that it lands exactly on the
    periodic boundary (fractional x = 1 → 0)."""
    grid = (6, 5, 4)
    frac = np.array([[1 - 1 / 6, 0.3, 0.2], [0.4, 0.7, 0.9], [0.1, 0.15, 0.55]])
    d = BispectrumLammpsDescriptor({"twojmax": 4})
    before = d.compute_grid(Structure.build(frac @ TRICLINIC, [4, 4, 4], TRICLINIC), grid)
    moved = frac + [1 / 6, 0, 0]
    after = d.compute_grid(Structure.build(moved @ TRICLINIC, [4, 4, 4], TRICLINIC), grid)
    assert feature_error(after, np.roll(before, 1, axis=0)) < 1e-9
    on_boundary = d.compute_grid(Structure.build((moved - [1, 0, 0] * (moved[:, :1] >= 1)) @ TRICLINIC, [4, 4, 4], TRICLINIC), grid)
    assert feature_error(on_boundary, after) < 1e-9


def test_bispectrum_supercell_repeats_the_unit_cell():
    """A 2×1×1 supercell with twice the grid points along a1 holds the unit cell's
    features twice: periodic images of a triclinic cell are handled."""
    s = triclinic_structure(4, elements=(4, 1))
    d = BispectrumLammpsDescriptor({"twojmax": 4, "radelem": {"H": 0.4, "Be": 0.5}, "wj": {"H": 0.8, "Be": 1.0}})
    unit = d.compute_grid(s, (4, 4, 5))
    cell2 = s.cell * [[2], [1], [1]]
    pos2 = np.vstack([s.positions, s.positions + s.cell[0]])
    double = d.compute_grid(Structure.build(pos2, np.tile(s.numbers, 2), cell2), (8, 4, 5))
    assert feature_error(double, np.concatenate([unit, unit], axis=0)) < 1e-9


def test_bispectrum_rejects_a_left_handed_cell():
    cell = TRICLINIC[[1, 0, 2]]
    with pytest.raises(ParameterError, match="left-handed"):
        BispectrumLammpsDescriptor().compute_grid(Structure.build([[0.1, 0.2, 0.3]], [4], cell), (2, 2, 2))


# --------------------------------------------------------------------------- gaussian


def brute_force_gaussian(points, structure, sigma, cutoff, z, reach=4):
    """Sum over every image n ∈ [−reach, reach]³ of every atom of element z."""
    total = np.zeros(len(points))
    rng = range(-reach, reach + 1)
    for n1 in rng:
        for n2 in rng:
            for n3 in rng:
                shift = np.array([n1, n2, n3]) @ structure.cell
                for pos, num in zip(structure.positions, structure.numbers):
                    if num != z:
                        continue
                    r2 = ((points - pos - shift) ** 2).sum(axis=1)
                    total += np.where(r2 < cutoff**2, np.exp(-r2 / (2 * sigma**2)), 0.0)
    return total / (2 * np.pi * sigma**2) ** 1.5


def test_gaussian_equals_brute_force_sum_over_images():
    s = triclinic_structure(5, elements=(4, 1, 4))
    params = {"sigma": 0.6, "cutoff": 3.0}
    grid = (7, 6, 8)
    block = (slice(2, 6), slice(0, 6), slice(5, 8))
    values = compute_block(GaussianDescriptor(params), s, grid, block, batch_points=13)
    idx = np.stack(np.meshgrid(np.arange(2, 6), np.arange(6), np.arange(5, 8), indexing="ij"), -1).reshape(-1, 3)
    points = (idx / grid) @ s.cell
    for feature, z in enumerate([1, 4]):  # elements by atomic number
        expected = brute_force_gaussian(points, s, 0.6, 3.0, z)
        np.testing.assert_allclose(values[..., feature].reshape(-1), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunks,batch", [(1, 4096), ((5, 7, 3), 4096), (100, 17), ((2, 18, 9), 1)])
def test_gaussian_blocks_equal_the_whole_grid_exactly(chunks, batch):
    snap = read_snapshot(DEMO_DATA / "Be_snapshot1.info.json")
    whole = GaussianDescriptor().compute_grid(Structure.from_any(snap), snap.grid_shape)
    if isinstance(chunks, int):
        chunks = {"x": chunks, "y": chunks, "z": chunks}
    elif isinstance(chunks, tuple):
        chunks = dict(zip("xyz", chunks))
    chunked = compute_descriptors(snap, "gaussian", chunks=chunks, batch_points=batch, progress=False)
    np.testing.assert_array_equal(chunked.values, whole)


def test_gaussian_integrates_to_the_number_of_atoms():
    """Σ_grid g·ΔV = N per element: a Gaussian of σ = 0.5 Å sampled every ≈ 0.2 Å has an
    aliasing error ~exp(−2π²σ²/h²) < 1e-50, and the cutoff at 9σ loses < 1e-17."""
    s = triclinic_structure(6, elements=(4, 1, 4, 4))
    grid = (16, 15, 17)
    values = GaussianDescriptor().compute_grid(s, grid)
    counts = values.sum(axis=(0, 1, 2)) * voxel_volume(s.cell, grid)
    np.testing.assert_allclose(counts, [1, 3], rtol=1e-9)


def test_lazy_grid_is_one_task_per_chunk():
    snap = read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    lazy = descriptor_grid(snap, "gaussian", chunks=9)
    assert lazy.data.numblocks == (2, 2, 3, 1)
    direct = GaussianDescriptor().compute_grid(Structure.from_any(snap), snap.grid_shape)
    np.testing.assert_array_equal(lazy.values, direct)


# --------------------------------------------------------------------------- stores


@pytest.fixture()
def be_store(tmp_path):
    snap = read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    return write_snapshot(snap, tmp_path / "be0.zarr", chunks=9)


def hidden_entries(store):
    return [p for p in os.listdir(store / "descriptors") if p.startswith(".")]


def test_store_write_cache_hit_and_no_silent_overwrite(be_store, monkeypatch):
    first = compute_descriptors(be_store, "gaussian", chunks=9, progress=False)
    assert first.attrs["plugin"] == "gaussian" and first.attrs["params"]["sigma"] == 0.5
    assert first.data.chunksize == (9, 9, 9, 1)

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not compute")

    monkeypatch.setattr(GaussianDescriptor, "compute", fail)
    again = compute_descriptors(be_store, "gaussian", params={"sigma": 0.5, "cutoff": 4.67637}, progress=False)
    np.testing.assert_array_equal(again.values, first.values)
    monkeypatch.undo()

    other = compute_descriptors(be_store, "gaussian", params={"sigma": 0.3}, progress=False)
    assert other.name != "gaussian" and other.attrs["params"]["sigma"] == 0.3
    assert sorted(malaflow.list_descriptors(be_store)) == sorted(["gaussian", other.name])
    np.testing.assert_array_equal(malaflow.open_descriptors(be_store, "gaussian").values, first.values)
    assert hidden_entries(be_store) == []


def test_other_parameters_under_the_same_name_are_not_overwritten(tmp_path):
    snap = read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    snap.descriptors["gaussian"] = malaflow.descriptor_array(
        np.zeros((*snap.grid_shape, 1)), params={"sigma": 0.2}, plugin="gaussian"
    )
    store = write_snapshot(snap, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="other parameters"):
        compute_descriptors(store, "gaussian", progress=False)
    assert float(abs(malaflow.open_descriptors(store, "gaussian")).max()) == 0.0
    replaced = compute_descriptors(store, "gaussian", overwrite=True, progress=False)
    assert replaced.attrs["params"]["sigma"] == 0.5 and float(replaced.max()) > 0
    assert hidden_entries(store) == []


def test_mala_descriptors_are_a_cache_hit_only_when_their_parameters_are_known(mala_data, tmp_path, monkeypatch):
    """A store ingested from MALA's files with descriptor_params="mala" holds `bispectrum`
    with MALA's parameters, which are the plugin's defaults: asking for them again must
    not recompute them. Without that word the .in.npy is kept as `bispectrum-unknown`, and a
    request for `bispectrum` computes it (and gets MALA's values, as LAMMPS reproduces them)."""
    unknown = write_snapshot(read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy", reader="mala"),
                             tmp_path / "u.zarr")
    assert malaflow.list_descriptors(unknown) == ["bispectrum-unknown"]
    computed = compute_descriptors(unknown, "bispectrum", progress=False)
    mala = malaflow.open_descriptors(unknown, "bispectrum-unknown")
    assert feature_error(computed.values, mala.values) < 5e-7  # float32 file: 5.8e-8 here

    known = read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy", reader="mala", descriptor_params="mala")
    store = write_snapshot(known, tmp_path / "m.zarr")
    monkeypatch.setattr(BispectrumCompiled, "compute", lambda *a: pytest.fail("recomputed"))
    stored = compute_descriptors(store, "bispectrum", progress=False)
    assert stored.shape == (18, 18, 27, 91)


class FailingDescriptor(Descriptor):
    """Fails on the third chunk, after others have been written."""

    name = "failing"

    @__import__("dataclasses").dataclass
    class Params:
        calls: int = param(0, "unused")

    def n_features(self, structure):
        return 1

    def halo(self):
        return 1.0

    def compute(self, points, positions, numbers, structure):
        if points[:, 0].min() > 1.0:
            raise RuntimeError("boom")
        return np.zeros((len(points), 1))


def test_a_failed_run_leaves_nothing(be_store):
    with pytest.raises(RuntimeError, match="boom"):
        compute_descriptors(be_store, FailingDescriptor(), chunks=6, progress=False)
    assert malaflow.list_descriptors(be_store) == [] and hidden_entries(be_store) == []


def test_bad_input_gives_clear_errors(be_store, caplog):
    from ase import Atoms

    with pytest.raises(PluginError, match="no descriptor plugin named 'nope'.*bispectrum"):
        compute_descriptors(be_store, "nope")
    with pytest.raises(ParameterError, match="no parameter.*sigmaa.*sigma, cutoff"):
        compute_descriptors(be_store, "gaussian", params={"sigmaa": 1})
    with pytest.raises(ParameterError, match="twojmax must be an integer"):
        get_descriptor("bispectrum", {"twojmax": 4.5})
    with pytest.raises(ParameterError, match="no atoms"):
        compute_descriptors(Atoms(cell=[3, 3, 3], pbc=True), "gaussian", grid_shape=(2, 2, 2))
    with pytest.raises(ParameterError, match="three positive sizes"):
        compute_descriptors(Atoms("Be", cell=[3, 3, 3], pbc=True), "gaussian", grid_shape=(2, 0, 2))
    assert not (be_store / "descriptors").exists()

    inside = Atoms("Be2", positions=[[0.5, 0.5, 0.5], [1.5, 1.0, 2.0]], cell=[3, 3, 3], pbc=True)
    outside = inside.copy()
    outside.positions += [[3.0, -6.0, 0.0], [0.0, 0.0, 3.0]]
    with caplog.at_level(logging.INFO, logger="malaflow.descriptors"):
        wrapped = compute_descriptors(outside, "gaussian", grid_shape=(4, 4, 4), progress=False)
    assert "2 atom(s) outside the cell" in caplog.text
    np.testing.assert_allclose(
        wrapped.values, compute_descriptors(inside, "gaussian", grid_shape=(4, 4, 4), progress=False).values, atol=1e-14
    )


def test_distributed_cluster_equals_threads(tmp_path):
    """Two worker processes: chunks of blockwise plugins and whole snapshots (LAMMPS)
    spread over them, results identical to the local threaded run."""
    distributed = pytest.importorskip("distributed")
    snaps = [read_snapshot(DEMO_DATA / f"Be_snapshot{i}.info.json") for i in range(2)]
    stores = [write_snapshot(s, tmp_path / f"s{i}.zarr") for i, s in enumerate(snaps)]
    local = compute_descriptors(snaps, "gaussian", chunks=8, progress=False)
    local_b = compute_descriptors(snaps, "bispectrum", params={"twojmax": 4}, progress=False)
    local_t = compute_descriptors(snaps[0], "bispectrum_torch", params={"twojmax": 2}, chunks=9, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            stored = compute_descriptors(stores, "gaussian", chunks=8, client=client, progress=False, dtype=None)
            stored_b = compute_descriptors(stores, "bispectrum", params={"twojmax": 4}, client=client,
                                           progress=False, dtype=None)
            # asks for a GPU, but no worker has one: runs on the CPU workers instead
            stored_t = compute_descriptors(stores[0], "bispectrum_torch", params={"twojmax": 2}, chunks=9,
                                           client=client, progress=False, dtype=None)
    for a, b in zip(stored + stored_b + [stored_t], local + local_b + [local_t]):
        np.testing.assert_array_equal(a.values, b.values)


def test_cli_descriptors(be_store):
    out = runner.invoke(app, ["descriptors", "list"])
    assert out.exit_code == 0
    assert "bispectrum" in out.output and "twojmax=10" in out.output and "sigma=0.5" in out.output
    out = runner.invoke(app, ["descriptors", "compute", str(be_store), "-p", "gaussian", "--param", "sigma=0.4"])
    assert out.exit_code == 0, out.output
    assert "written" in out.output
    out = runner.invoke(app, ["descriptors", "compute", str(be_store), "-p", "gaussian", "--param", "sigma=0.4"])
    assert "present (parameters equal)" in out.output
    [name] = malaflow.list_descriptors(be_store)
    assert malaflow.open_descriptors(be_store, name).attrs["params"]["sigma"] == 0.4


def test_example_third_party_plugin(tmp_path):
    """The plugin in examples/ as a user installs it: pip, entry point, then malaflow."""
    import subprocess
    import sys

    from conftest import REPO

    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "examples" / "malaflow-nearest")],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    listed = subprocess.run([sys.executable, "-m", "malaflow.cli", "descriptors", "list"],
                            capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "nearest  [malaflow-nearest 0.1.0" in listed.stdout
    script = """
import numpy as np
from ase import Atoms
import malaflow
atoms = Atoms("Be", positions=[[0, 0, 0]], cell=[3.0, 3.0, 3.0], pbc=True)
values = malaflow.compute_descriptors(atoms, "nearest", grid_shape=(4, 4, 4), chunks=3, progress=False)
np.save("nearest.npy", values.values)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    values = np.load(tmp_path / "nearest.npy")[..., 0]
    # one atom per simple-cubic cell: the nearest image is at the closest corner
    i = np.minimum(np.arange(4), 4 - np.arange(4))
    expected = 0.75 * np.sqrt(i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2)
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_two_runs_on_one_store_wait_for_each_other(be_store, tmp_path):
    """Two `descriptors compute` processes on the same stores at once: both succeed (the
    second waits on the array's lock, then finds it done) and the stored array is the one a
    single run writes."""
    import subprocess
    import sys

    other = write_snapshot(read_snapshot(DEMO_DATA / "Be_snapshot1.info.json"), tmp_path / "be1.zarr", chunks=9)
    command = [sys.executable, "-m", "malaflow.cli", "descriptors", "compute", str(be_store), str(other),
               "-p", "gaussian", "--chunks", "9"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    for store in (be_store, other):
        assert malaflow.list_descriptors(store) == ["gaussian"]
        assert hidden_entries(store) == []
        single = compute_descriptors(read_snapshot(DEMO_DATA / f"Be_snapshot{0 if store == be_store else 1}.info.json"),
                                     "gaussian", progress=False)
        np.testing.assert_array_equal(malaflow.open_descriptors(store, "gaussian").values,
                                      single.values.astype(np.float32))


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    """A `.malaflow-tmp-*` folder whose writer on this host is gone is removed by the next
    write in that folder; one whose writer runs is left alone."""
    import subprocess

    from malaflow.atomic import _HOST

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now
    stale = tmp_path / f".malaflow-tmp-a.zarr-h{_HOST}-{dead.pid}-0123abcd"
    alive = tmp_path / f".malaflow-tmp-b.zarr-h{_HOST}-{os.getpid()}-0123abcd"
    for folder in (stale, alive):
        (folder / "ldos").mkdir(parents=True)
    write_snapshot(read_snapshot(DEMO_DATA / "Be_snapshot0.info.json"), tmp_path / "c.zarr")
    assert not stale.exists() and alive.exists() and (tmp_path / "c.zarr").is_dir()
