"""Export to MALA's layout against MALA's own files: a snapshot of MALA's test data, read into
a store and exported again, gives back MALA's .in.npy, .out.npy and .info.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

import malaflow
from malaflow.mala_export import export_mala


def test_export_gives_back_malas_files(mala_data, tmp_path):
    source = mala_data / "Be2" / "Be_snapshot0"
    snap = malaflow.read_snapshot(source.with_name("Be_snapshot0.in.npy"), reader="mala", descriptor_params="mala")
    store = malaflow.write_snapshot(snap, tmp_path / "be0.zarr")
    written = export_mala(store, tmp_path / "out", "Be_snapshot0")
    assert [p.name for p in written] == ["Be_snapshot0.in.npy", "Be_snapshot0.out.npy", "Be_snapshot0.info.json",
                                         "Be_snapshot0.pp.ldos.in"]
    np.testing.assert_array_equal(np.load(written[1]), np.load(f"{source}.out.npy"))  # float32 both ways
    ours, theirs = np.load(written[0]), np.load(f"{source}.in.npy")
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    # grid coordinates (Å) to 2e-7 Å and the features bit for bit (float32 in the store and in MALA's file)
    np.testing.assert_allclose(ours[..., :3], theirs[..., :3], atol=1e-5)
    np.testing.assert_array_equal(ours[..., 3:], theirs[..., 3:])
    info = json.loads(written[2].read_text())
    reference = json.loads(source.with_name("Be_snapshot0.info.json").read_text())
    for key, value in reference.items():
        if key in ("voxel", "atoms"):
            continue
        assert info[key] == pytest.approx(value, rel=1e-12) if isinstance(value, float) else info[key] == value, key
    np.testing.assert_allclose(info["voxel"]["array"], reference["voxel"]["array"], rtol=1e-12)
    for key in ("numbers", "positions", "cell"):
        np.testing.assert_allclose(info["atoms"][key], reference["atoms"][key], rtol=1e-12)
    again = malaflow.read_snapshot(written[1], reader="mala")  # the energy grid from the written pp.x input
    np.testing.assert_allclose(again.energies, snap.energies)
    assert again.attrs["ldos_broadening"] == 5.0 and again.attrs["ldos_broadening_kind"] == "fermi-dirac"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)


def test_export_at_the_command_line(tmp_path):
    """Catalog ids in, MALA's files out; a snapshot without the descriptors asked for is one line."""
    import subprocess
    import sys

    from malaflow.catalog import Catalog
    from malaflow.demo import demo_catalog

    cat: Catalog = demo_catalog(tmp_path / "demo")
    cat.ingest(["be2-298K-3"], progress=False)
    malaflow.compute_descriptors(cat.store_path("be2-298K-3"), "gaussian", progress=False)
    run = subprocess.run([sys.executable, "-m", "malaflow.cli", "export", "be2-298K-3", "-o", "mala", "--descriptor",
                          "gaussian", "-c", str(cat.path)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    snap = malaflow.read_snapshot(tmp_path / "mala" / "be2-298K-3.out.npy", reader="mala",
                                  descriptor_name="gaussian", descriptor_params={})
    original = cat.open("be2-298K-3")
    np.testing.assert_array_equal(np.asarray(snap.ldos), original.ldos.values)
    assert snap.reference["total_energy"] == original.attrs["reference"]["total_energy"]
    run = subprocess.run([sys.executable, "-m", "malaflow.cli", "export", "be2-298K-3", "-o", "more", "-c",
                          str(cat.path)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and "no 'bispectrum' descriptors to export" in run.stderr
    assert not (tmp_path / "more").exists() or not any((tmp_path / "more").iterdir())
