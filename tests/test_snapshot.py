"""Snapshot ↔ xarray.Dataset ↔ Zarr v3 group: round trips, chunking, atomic writes."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr

import malaflow
from malaflow import store as snapmod
from malaflow.errors import MalaflowError, StoreError
from malaflow.grid import grid_positions, voxel_volume


def make_snapshot(rng: np.random.Generator, grid=(10, 12, 7), n_e=6) -> malaflow.Snapshot:
    cell = np.array([[4.0, 0.0, 0.0], [-2.0, 3.4641, 0.0], [0.0, 0.0, 5.1]])
    return malaflow.Snapshot(
        positions=rng.uniform(0, 3, (3, 3)),
        numbers=[4, 4, 13],
        cell=cell,
        pbc=(True, True, False),
        energies=np.linspace(-5, 10, n_e),
        ldos=rng.random(grid + (n_e,), dtype=np.float32),
        density=rng.random(grid, dtype=np.float32),
        dos=rng.random(n_e, dtype=np.float32),
        descriptors={"toy": malaflow.descriptor_array(rng.random(grid + (5,), dtype=np.float32), {"sigma": 0.3}, "toy")},
        temperature=298.0,
        fermi_energy=7.25,
        n_electrons=10.0,
        reference={"band_energy": 12.5, "total_energy": -80.25},
        code="qe",
        provenance={"files": {"/x/Be.out": "ab" * 32}},
        attrs={"ldos_broadening": 0.2},
    )


def test_round_trip_bit_identical_with_requested_chunks(tmp_path):
    snap = make_snapshot(np.random.default_rng(0))
    path = malaflow.write_snapshot(snap, tmp_path / "s.zarr", chunks={"x": 4, "y": 5, "z": 3})
    ds = malaflow.open_snapshot(path)
    assert isinstance(ds.ldos.data, da.Array)
    assert ds.ldos.dims == ("x", "y", "z", "energy")
    assert ds.ldos.data.chunksize == (4, 5, 3, 6)
    assert ds.ldos.encoding["chunks"] == (4, 5, 3, 6)
    assert ds.density.data.chunksize == (4, 5, 3)
    np.testing.assert_array_equal(ds.ldos.values, snap.ldos)
    np.testing.assert_array_equal(ds.density.values, snap.density)
    np.testing.assert_array_equal(ds.dos.values, snap.dos)
    np.testing.assert_array_equal(ds.energy.values, snap.energies)
    np.testing.assert_array_equal(ds.positions.values, snap.positions)
    assert ds.attrs["cell"] == snap.cell.tolist()
    assert ds.attrs["pbc"] == [True, True, False]
    assert ds.attrs["reference"] == snap.reference
    assert ds.attrs["provenance"] == snap.provenance
    assert ds.attrs["ldos_broadening"] == 0.2
    assert malaflow.list_descriptors(path) == ["toy"]
    desc = malaflow.open_descriptors(path, "toy")
    assert desc.dims == ("x", "y", "z", "feature") and desc.data.chunksize == (4, 5, 3, 5)
    np.testing.assert_array_equal(desc.values, snap.descriptors["toy"].values)
    assert desc.attrs["params"] == {"sigma": 0.3}

    back = malaflow.load_snapshot(path)
    for name in ("temperature", "fermi_energy", "n_electrons", "reference", "code", "provenance", "attrs", "pbc", "grid_shape"):
        assert getattr(back, name) == getattr(snap, name), name
    np.testing.assert_array_equal(back.cell, snap.cell)
    np.testing.assert_array_equal(np.asarray(back.ldos), snap.ldos)


def test_rechunk_on_open_and_default_chunks(tmp_path):
    snap = make_snapshot(np.random.default_rng(1), grid=(40, 33, 5))
    path = malaflow.write_snapshot(snap, tmp_path / "s.zarr")
    assert malaflow.open_snapshot(path).ldos.data.chunksize == (32, 32, 5, 6)
    assert malaflow.open_snapshot(path, chunks=8).ldos.data.chunksize == (8, 8, 5, 6)


def test_float64_is_stored_float32_unless_asked(tmp_path):
    snap = make_snapshot(np.random.default_rng(2))
    snap.ldos = snap.ldos.astype(np.float64) + 1e-12
    ds = malaflow.open_snapshot(malaflow.write_snapshot(snap, tmp_path / "a.zarr"))
    assert ds.ldos.dtype == np.float32
    ds = malaflow.open_snapshot(malaflow.write_snapshot(snap, tmp_path / "b.zarr", dtype=None))
    assert ds.ldos.dtype == np.float64
    np.testing.assert_array_equal(ds.ldos.values, snap.ldos)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    snap = make_snapshot(np.random.default_rng(3))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(snapmod, "_write_descriptor_group", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        malaflow.write_snapshot(snap, tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_store(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    old = make_snapshot(rng)
    path = malaflow.write_snapshot(old, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="exists already"):
        malaflow.write_snapshot(make_snapshot(rng), path)
    monkeypatch.setattr(snapmod, "_write_descriptor_group", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        malaflow.write_snapshot(make_snapshot(rng), path, overwrite=True)
    np.testing.assert_array_equal(malaflow.open_snapshot(path).ldos.values, old.ldos)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_open_rejects_what_is_not_a_snapshot(tmp_path):
    with pytest.raises(StoreError, match="no snapshot store"):
        malaflow.open_snapshot(tmp_path / "nothing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not a malaflow snapshot"):
        malaflow.open_snapshot(tmp_path / "other.zarr")
    path = malaflow.write_snapshot(make_snapshot(np.random.default_rng(5)), tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="no descriptors named 'bispectrum'.*stored: toy"):
        malaflow.open_descriptors(path, "bispectrum")


def test_inconsistent_snapshot_is_rejected():
    rng = np.random.default_rng(6)
    with pytest.raises(MalaflowError, match="energy grid"):
        malaflow.Snapshot(positions=[[0, 0, 0]], numbers=[1], cell=np.eye(3), ldos=rng.random((2, 2, 2, 3)), energies=[0, 1])
    with pytest.raises(MalaflowError, match="2 positions but 1 atomic numbers"):
        malaflow.Snapshot(positions=np.zeros((2, 3)), numbers=[1], cell=np.eye(3))
    with pytest.raises(MalaflowError, match="chunks may only be given"):
        malaflow.write_snapshot(make_snapshot(rng), "/tmp/never.zarr", chunks={"energy": 2})


def test_grid_geometry_matches_mala_coordinates(mala_data):
    """MALA's .in.npy carry the Cartesian grid coordinates (Å) in their first three columns."""
    info = json.loads((mala_data / "Be2" / "Be_snapshot0.info.json").read_text())
    cell = np.array(info["atoms"]["cell"])
    coords = np.load(mala_data / "Be2" / "Be_snapshot0.in.npy", mmap_mode="r")[..., :3]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in coords.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    ours = grid_positions(cell, coords.shape[:3], idx).reshape(coords.shape)
    np.testing.assert_allclose(ours, coords, atol=1e-5)
    voxel = np.array(info["voxel"]["array"])
    assert voxel_volume(cell, coords.shape[:3]) == pytest.approx(abs(np.linalg.det(voxel)), rel=1e-12)
