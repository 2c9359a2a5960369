"""LDOS alignment on the band bottom (MALA's LDOSAligner) with hand-built LDOS of known
shifts, and the LDOS split along energy and merged back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import malaflow
from malaflow.cli import app
from malaflow.errors import ParameterError
from malaflow.ldos_alignment import alignment_shift, merge_energy, split_energy

STEP = 0.1
ENERGIES = np.arange(-5.0, 15.0, STEP)


def ldos(bottom: float) -> np.ndarray:
    """A free-electron-like band from ``bottom`` (eV), different in every voxel, 1/(eV·Å³)."""
    x = np.clip(ENERGIES - bottom, 0.0, None)
    band = np.sqrt(x) * np.exp(-((x / 8.0) ** 2)) * 0.05
    return band * np.linspace(0.5, 1.5, 8).reshape(2, 2, 2, 1)


def store(tmp_path, name: str, bottom: float):
    snap = malaflow.Snapshot(positions=[[0, 0, 0], [1.1, 1.2, 1.3]], numbers=[4, 4], cell=np.diag([2.2, 2.4, 2.6]),
                             grid_shape=(2, 2, 2), energies=ENERGIES, ldos=ldos(bottom), temperature=298.0,
                             n_electrons=4.0, fermi_energy=bottom + 6.0, reference={"band_energy": 10.0 + 4 * bottom})
    path = malaflow.write_snapshot(snap, tmp_path / f"{name}.zarr", dtype=None)
    malaflow.compute_descriptors([path], "gaussian", progress=False)
    return path


@pytest.mark.parametrize("bottom", [0.3, -0.7, 1.2, 0.0])
def test_the_shift_of_a_known_band_bottom_is_found(bottom):
    k = alignment_shift(ldos(bottom).mean(axis=(0, 1, 2)), ldos(0.0).mean(axis=(0, 1, 2)))
    assert k == round(bottom / STEP)


def test_aligned_stores_keep_their_physics_in_the_aligned_frame(tmp_path):
    reference = store(tmp_path, "ref", 0.0)
    moved = store(tmp_path, "moved", 0.8)
    result = CliRunner().invoke(app, ["align", str(moved), str(reference), "--reference", str(reference),
                                      "-o", str(tmp_path / "aligned")])
    assert result.exit_code == 0, result.output
    assert "shifted by +8 energy steps" in result.output
    aligned = malaflow.open_snapshot(tmp_path / "aligned" / "moved.zarr")
    np.testing.assert_allclose(aligned["ldos"].values[..., :150], ldos(0.0)[..., :150], atol=1e-15)
    assert aligned.attrs["ldos_shift_ev"] == pytest.approx(0.8)
    assert aligned.attrs["fermi_energy"] == pytest.approx(6.0)  # 6.8 − 0.8
    assert aligned.attrs["reference"]["band_energy"] == pytest.approx(10.0)  # 13.2 − 4 × 0.8
    before = malaflow.observables(malaflow.open_snapshot(moved))
    after = malaflow.observables(aligned)  # the same LDOS 0.8 eV lower: the same electrons, moved
    assert after.fermi_energy == pytest.approx(before.fermi_energy - 0.8, abs=1e-9)
    assert after.band_energy == pytest.approx(before.band_energy - 4.0 * 0.8, abs=1e-9)
    assert malaflow.list_descriptors(tmp_path / "aligned" / "moved.zarr") == ["gaussian"]
    unchanged = malaflow.open_snapshot(tmp_path / "aligned" / "ref.zarr")
    assert unchanged.attrs["ldos_shift_ev"] == 0.0


def test_split_along_energy_and_merged_exactly(tmp_path):
    ds = malaflow.open_snapshot(store(tmp_path, "s", 0.4))
    parts = split_energy(ds, [2.0, 7.5])
    assert [float(p["energy"][0]) for p in parts] == pytest.approx([-5.0, 2.0, 7.5])
    paths = [malaflow.write_snapshot(p, tmp_path / f"part{i}.zarr", dtype=None) for i, p in enumerate(parts)]
    merged = merge_energy([malaflow.open_snapshot(p) for p in reversed(paths)])
    np.testing.assert_array_equal(merged["energy"].values, ds["energy"].values)
    np.testing.assert_array_equal(merged["ldos"].values, ds["ldos"].values)
    broken = parts[1].copy()
    broken["ldos"] = broken["ldos"] * 1.01
    with pytest.raises(ParameterError, match="disagree at their shared energy 2"):
        merge_energy([parts[0], broken])
    with pytest.raises(ParameterError, match="not an inner energy"):
        split_energy(ds, [2.05])
