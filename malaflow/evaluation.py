"""How good a prediction is: LDOS, band energy, Fermi level and density beside the DFT
reference of a snapshot, each side at its own self-consistent Fermi level."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from .observables import observables, target_of
from .store import open_descriptors, open_snapshot


@dataclass
class Errors:
    snapshot: str
    ldos_mse: float  # (1/(eV·Å³))²
    band_energy_mev_per_atom: float  # predicted − reference
    fermi_mev: float
    density_relative: float  # Σ|n_pred − n_ref| / Σ n_ref
    n_atoms: int = 0
    outside_training: float = float("nan")  # fraction of points whose descriptors the training never saw
    # an ensemble's predicted standard deviations (malaflow.ensemble.spread); NaN for one model
    band_energy_sigma_mev_per_atom: float = float("nan")
    fermi_sigma_mev: float = float("nan")

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def compare(predicted: xr.Dataset, reference: xr.Dataset, name: str = "") -> Errors:
    """Errors of a predicted snapshot dataset against a reference one on the same grid."""
    target = target_of(predicted)
    ours, theirs = observables(predicted, target.name), observables(reference, target.name)
    n_atoms = reference.sizes["atom"]
    n_pred = target.density(predicted, ours.fermi_energy)
    n_ref = target.density(reference, theirs.fermi_energy)
    diff = (predicted[target.variable] - reference[target.variable].astype(np.float64)) ** 2
    # the extrapolated share comes from the descriptor chunks the LDOS is predicted from: one pass
    share = predicted["extrapolated"].mean() if "extrapolated" in predicted else np.nan
    ensemble = "ldos_members" in predicted
    if ensemble:  # the members' DOS in the same pass: their LDOS is not predicted twice
        from .ensemble import member_dos, spread
    *sums, dos = dask.compute(diff.mean(), abs(n_pred - n_ref).sum(), n_ref.sum(), share,
                              member_dos(predicted) if ensemble else None)
    mse, l1, norm, share = (float(v) for v in sums)
    sigma = {}
    if ensemble:
        both = spread(predicted, dos=dos)
        sigma = {"band_energy_sigma_mev_per_atom": 1000.0 * both["band_energy"]["std"] / n_atoms,
                 "fermi_sigma_mev": 1000.0 * both["fermi_energy"]["std"]}
    return Errors(
        snapshot=name,
        ldos_mse=mse,
        band_energy_mev_per_atom=1000.0 * (ours.band_energy - theirs.band_energy) / n_atoms,
        fermi_mev=1000.0 * (ours.fermi_energy - theirs.fermi_energy),
        density_relative=l1 / norm,
        n_atoms=n_atoms,
        outside_training=share,
        **sigma,
    )


def predict_store(model, store: str | Path) -> tuple[xr.Dataset, xr.Dataset]:
    """The prediction for a stored snapshot from its stored descriptors (computed if
    missing), and the snapshot itself."""
    from .compute import compute_descriptors

    store = Path(store)
    descriptor = model.descriptor_plugin()
    compute_descriptors(store, descriptor, progress=False)  # a cache hit when present
    reference = open_snapshot(store)
    descriptors = open_descriptors(store, descriptor.store_name())
    return model.predict(reference, descriptors=descriptors), reference


def evaluate_store(model, store: str | Path, name: str = "") -> Errors:
    """Predict a stored snapshot and compare with its LDOS."""
    return compare(*predict_store(model, store), name or Path(store).stem)


def evaluate_stores(model, stores: Mapping[str, str | Path]) -> list[tuple[Errors, xr.Dataset, xr.Dataset]]:
    """Errors of a model on stored snapshots ({name: store}), each with its (lazy)
    prediction and the snapshot, for plots."""
    results = []
    for name, store in stores.items():
        predicted, reference = predict_store(model, store)
        results.append((compare(predicted, reference, name), predicted, reference))
    return results


def errors_table(rows: list[Errors]) -> str:
    """One line per snapshot; an ensemble's predicted σ beside each error it estimates."""
    ensemble = any(np.isfinite(e.band_energy_sigma_mev_per_atom) for e in rows)
    lines = [f"{'snapshot':<16} {'LDOS MSE':>12} {'ΔE_band meV/atom':>17} " + (f"{'σ':>8} " if ensemble else "")
             + f"{'ΔE_F meV':>10} " + (f"{'σ':>8} " if ensemble else "") + f"{'density rel.':>13} {'extrapolated':>12}"]
    for e in rows:
        band = f"{e.band_energy_mev_per_atom:17.3f} " + (f"{e.band_energy_sigma_mev_per_atom:8.3f} " if ensemble else "")
        fermi = f"{e.fermi_mev:10.3f} " + (f"{e.fermi_sigma_mev:8.3f} " if ensemble else "")
        lines.append(f"{e.snapshot:<16} {e.ldos_mse:12.4e} {band}{fermi}{e.density_relative:13.5f} "
                     f"{_percent(e.outside_training):>12}")
    return "\n".join(lines)


def errors_by_size(rows: list[Errors]) -> str:
    """Errors per cell size (atoms per cell): mean and largest |ΔE_band|, mean |ΔE_F|,
    mean density error — how well a model transfers to cells it was not trained on."""
    lines = [f"{'atoms':>5} {'snapshots':>9} {'|ΔE_band| meV/atom':>19} {'max':>8} {'|ΔE_F| meV':>11} "
             f"{'density rel.':>13} {'extrapolated':>12}"]
    for size in sorted({e.n_atoms for e in rows}):
        group = [e for e in rows if e.n_atoms == size]
        band = [abs(e.band_energy_mev_per_atom) for e in group]
        lines.append(f"{size:5d} {len(group):9d} {np.mean(band):19.3f} {max(band):8.3f} "
                     f"{np.mean([abs(e.fermi_mev) for e in group]):11.3f} "
                     f"{np.mean([e.density_relative for e in group]):13.5f} "
                     f"{_percent(np.mean([e.outside_training for e in group])):>12}")
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    return "-" if np.isnan(fraction) else f"{100 * fraction:.1f} %"
