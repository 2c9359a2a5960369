"""LDOS alignment across snapshots (MALA's LDOSAligner) and LDOS split along energy.

Alignment: in snapshots of one material the band bottom moves with the configuration (the
average electrostatic potential of a periodic cell is arbitrary). Shifting each snapshot's
LDOS by a whole number k of energy steps so that its band bottom sits where the
reference's does puts the same physics on the same network outputs. The shift is
δ = k·Δε; the aligned snapshot's DFT values are moved into its frame (Fermi level − δ,
band and total energy − N·δ) and δ is recorded (``ldos_shift_ev``), so its observables
stay comparable and the absolute values are one addition away. The shift is found as
MALA finds it: the first energy where the mean LDOS exceeds ``threshold`` × its peak,
refined by the least squared difference to the reference over the next ``window`` steps.

Splitting: the LDOS written as parts along energy (e.g. for pp.x runs of parts of the
window, or storage in pieces) and merged back exactly; neighbouring parts may share their
boundary energy, which must then hold the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import ParameterError, StoreError


def band_bottom(mean_ldos: np.ndarray, threshold: float = 1e-3) -> int:
    """Index of the first energy where the mean LDOS exceeds ``threshold`` × its peak."""
    mean_ldos = np.asarray(mean_ldos, dtype=float)
    above = np.nonzero(mean_ldos > threshold * mean_ldos.max())[0]
    if mean_ldos.max() <= 0 or not len(above):
        raise ParameterError("the LDOS is nowhere positive: no band bottom to align")
    return int(above[0])


def alignment_shift(mean_ldos: np.ndarray, reference: np.ndarray, threshold: float = 1e-3,
                    window: int | None = None) -> int:
    """Whole energy steps k such that ``mean_ldos[i + k]`` best matches ``reference[i]``."""
    mean_ldos, reference = np.asarray(mean_ldos, dtype=float), np.asarray(reference, dtype=float)
    if mean_ldos.shape != reference.shape:
        raise ParameterError(f"LDOS energy grids differ: {mean_ldos.shape[0]} and {reference.shape[0]} points")
    window = window or max(3, len(reference) // 10)
    start = band_bottom(reference, threshold)
    guess = band_bottom(mean_ldos, threshold) - start
    stop = min(len(reference), start + window)

    mean = xr.DataArray(mean_ldos, dims="energy")

    def misfit(k: int) -> float:
        return float(np.sum((shifted(mean, k).values[:stop] - reference[:stop]) ** 2))

    return min(range(guess - 2, guess + 3), key=lambda k: (misfit(k), abs(k - guess)))


def shifted(values: xr.DataArray, k: int) -> xr.DataArray:
    """``values[..., i + k]`` at energy index i, zeros where that falls outside the grid
    (lazy for a dask-backed LDOS)."""
    return values.shift(energy=-k, fill_value=0.0)


def align(ds: xr.Dataset, k: int) -> xr.Dataset:
    """The snapshot with its LDOS moved by ``k`` energy steps (lazily, chunk by chunk) and
    its DFT values moved into the aligned frame (see the module docstring)."""
    energies = ds["energy"].values
    step = float(np.diff(energies).mean())
    if not np.allclose(np.diff(energies), step, rtol=1e-6):
        raise ParameterError("aligning needs a uniform LDOS energy grid")
    delta = k * step
    out = ds.copy()
    out["ldos"] = shifted(ds["ldos"], k)
    n = float(ds.attrs.get("n_electrons") or 0.0)
    attrs = dict(ds.attrs)
    attrs["ldos_shift_ev"] = float(attrs.get("ldos_shift_ev", 0.0)) + delta
    if attrs.get("fermi_energy") is not None:
        attrs["fermi_energy"] = attrs["fermi_energy"] - delta
    reference = dict(attrs.get("reference") or {})
    for key in ("band_energy", "total_energy", "one_electron_contribution", "internal_energy"):
        if key in reference:
            reference[key] -= n * delta
    attrs["reference"] = reference
    out.attrs = attrs
    return out


def align_stores(stores: Sequence[str | Path], reference: str | Path, output: str | Path,
                 threshold: float = 1e-3, window: int | None = None) -> dict[str, int]:
    """Aligned copies of ``stores`` (descriptors included) in the folder ``output``, each
    shifted onto ``reference``; returns the shift in energy steps of each."""
    import shutil

    from .store import DESCRIPTOR_GROUP, open_snapshot, write_snapshot

    def mean(ds: xr.Dataset) -> np.ndarray:
        return ds["ldos"].mean(dim=("x", "y", "z")).values

    ref = open_snapshot(reference)
    target = mean(ref)
    shifts = {}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for store in map(Path, stores):
        ds = open_snapshot(store)
        if not np.allclose(ds["energy"].values, ref["energy"].values):
            raise StoreError(f"{store}: its LDOS energy grid is not {reference}'s; align snapshots of one grid")
        k = alignment_shift(mean(ds), target, threshold, window)
        destination = output / store.name
        chunks = {d: ds.chunks[d][0] for d in ("x", "y", "z")} if ds.chunks else None
        write_snapshot(align(ds, k), destination, chunks=chunks, dtype=None)
        if (store / DESCRIPTOR_GROUP).is_dir():
            shutil.copytree(store / DESCRIPTOR_GROUP, destination / DESCRIPTOR_GROUP)
        shifts[str(store)] = k
    return shifts


def split_energy(ds: xr.Dataset, boundaries: Sequence[float]) -> list[xr.Dataset]:
    """The snapshot in parts along energy, cut at ``boundaries`` (eV): each boundary energy
    ends one part and starts the next (shared, as split pp.x runs share it)."""
    energies = ds["energy"].values
    cuts = [0]
    for b in boundaries:
        i = int(np.argmin(np.abs(energies - b)))
        if not np.isclose(energies[i], b, atol=1e-6) or not cuts[-1] < i < len(energies) - 1:
            raise ParameterError(f"cut at {b} eV: not an inner energy of the grid, in increasing order")
        cuts.append(i)
    cuts.append(len(energies) - 1)
    return [ds.isel(energy=slice(a, b + 1)) for a, b in zip(cuts[:-1], cuts[1:])]


def merge_energy(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Parts along energy joined back; a boundary energy held by two parts must agree."""
    parts = sorted(parts, key=lambda p: float(p["energy"][0]))
    pieces = [parts[0]]
    for before, part in zip(parts, parts[1:]):
        last, first = float(before["energy"][-1]), float(part["energy"][0])
        if first < last - 1e-9:
            raise ParameterError(f"parts overlap: one ends at {last:.6g} eV, the next starts at {first:.6g} eV")
        if np.isclose(first, last, atol=1e-9):
            if not np.array_equal(before["ldos"].isel(energy=-1).values, part["ldos"].isel(energy=0).values):
                raise ParameterError(f"the parts disagree at their shared energy {first:.6g} eV")
            part = part.isel(energy=slice(1, None))
        pieces.append(part)
    return xr.concat(pieces, dim="energy", data_vars="minimal", coords="minimal", compat="override",
                     combine_attrs="override")
