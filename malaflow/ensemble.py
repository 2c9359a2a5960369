"""Ensembles: K networks trained on the same data from different seeds, and what their
disagreement says. ``ensemble: K`` in a training config trains the members as K Dask tasks
(``MODEL/member-k``, seed + k) and writes ``MODEL/ensemble.json``; :func:`malaflow.load_model`
then gives an :class:`EnsembleModel`, whose prediction is the members' mean LDOS (lazy, from
descriptors computed once) with the members' LDOS beside it, and :func:`spread` gives each
observable's standard deviation over the members' own observables — each member's Fermi
level solved from its own DOS, not a linearised guess.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import ElectronCountError, MalaflowError, StoreError
from .physics.dos import band_energy, density_of_states, energy_weights, entropy_contribution, fermi_level
from .runtime import task_resources

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"


def member_configs(config: Any) -> list[Any]:
    """The members' training configs: seeds seed, seed + 1, …; outputs MODEL/member-k; a
    warm start from an ensemble starts member k from its member k."""
    starts = [config.warm_start] * config.ensemble
    if config.warm_start and is_ensemble(config.warm_start):
        names = ensemble_members(Path(config.warm_start))
        if len(names) < config.ensemble:
            raise MalaflowError(f"training config: warm_start {config.warm_start} has {len(names)} members, "
                                f"too few to start the {config.ensemble} of this ensemble")
        starts = [str(Path(config.warm_start) / name) for name in names]
    return [dataclasses.replace(config, seed=config.seed + k, output=str(Path(config.output) / f"member-{k}"),
                                ensemble=1, warm_start=starts[k])
            for k in range(config.ensemble)]


def train_ensemble(config: Any, client: Any, resume: bool, max_epochs: int | None, progress: bool) -> Path:
    """Train the members as tasks on ``client`` (a local cluster of up to K single-threaded
    workers without one), after computing the descriptors they share once."""
    from .compute import compute_descriptors
    from .descriptors import get_descriptor
    from .training import selected_snapshots

    selected = selected_snapshots(config)
    descriptor = get_descriptor(config.descriptor["plugin"], config.descriptor.get("params") or {})
    compute_descriptors(list(selected.stores.values()), descriptor, progress=progress)
    members = member_configs(config)
    if client is None:
        from .runtime import cluster

        workers = max(1, min(len(members), os.cpu_count() or 1))
        with cluster({"kind": "local", "workers": workers, "threads_per_worker": 1}) as local:
            _run_members(members, local, resume, max_epochs, progress)
    else:
        _run_members(members, client, resume, max_epochs, progress)
    return _write_ensemble(config, members, selected)


def _run_members(members: list[Any], client: Any, resume: bool, max_epochs: int | None, progress: bool) -> None:
    from distributed import as_completed
    from tqdm.auto import tqdm

    resources = task_resources(client, {"GPU": 1})
    futures = [client.submit(train_member, m, resume, max_epochs, pure=False, resources=resources)
               for m in members]
    for future in tqdm(as_completed(futures), total=len(futures), desc=f"training {len(members)} members",
                       unit="member", disable=not progress):
        future.result()  # a member's failure ends the run with its message


def _write_ensemble(config: Any, members: list[Any], selected: Any) -> Path:
    """ensemble.json, with the spread calibrated on the validation snapshots, written whole."""
    from .trained_model import load_model

    out = Path(config.output)
    names = [Path(m.output).name for m in members]
    model = EnsembleModel([load_model(out / name) for name in names])
    for upf in (model.dft.get("pseudopotentials") or {}).values():  # beside the ensemble too: its predictions'
        if (out / names[0] / upf).is_file():                        # total energies find them there
            shutil.copyfile(out / names[0] / upf, out / upf)
    calibration = fit_calibration(model, {id: selected.stores[id] for id in selected.validation})
    text = json.dumps({"malaflow_ensemble": 1, "members": names, "calibration": calibration,
                       "calibrated_on": selected.validation}, indent=1)
    tmp = out / f".{ENSEMBLE_FILE}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / ENSEMBLE_FILE)
    return out


def fit_calibration(model: EnsembleModel, stores: dict[str, Path]) -> float:
    """The factor c that makes the band-energy spread an honest standard deviation on the
    validation snapshots: c² = Σ ΔE_band² / Σ σ_band², the mean squared error over the mean
    variance the members predict. Why not the maximum-likelihood scale of Gaussian errors,
    mean((ΔE/σ)²): a snapshot on which the members agree by chance (σ → 0) blows it up — 42
    against 3.0 for this ratio, seen on 4 validation cells. With one validation snapshot both
    are |ΔE_band| / σ_band there. A snapshot with σ = ∞ (a member could not place the
    electrons) is left out: it would take the factor to zero."""
    from .evaluation import evaluate_store

    errors = [evaluate_store(model, store, id) for id, store in stores.items()]
    unbounded = [e.snapshot for e in errors if not np.isfinite(e.band_energy_sigma_mev_per_atom)]
    if unbounded:
        log.warning("calibration: left out %s, where a member's DOS cannot hold the electrons", ", ".join(unbounded))
        errors = [e for e in errors if e.snapshot not in unbounded]
    variance = sum(e.band_energy_sigma_mev_per_atom ** 2 for e in errors)
    if not errors:
        log.warning("no validation snapshot with a finite spread: no calibration (factor 1)")
        return 1.0
    if variance == 0:
        log.warning("the ensemble's members agree exactly on the validation snapshots: no calibration (factor 1)")
        return 1.0
    return float(np.sqrt(sum(e.band_energy_mev_per_atom ** 2 for e in errors) / variance))


def train_member(config: Any, resume: bool, max_epochs: int | None) -> Path:
    """One member, as a task: it occupies its worker, so its own dask work (statistics,
    batches) runs on the worker's threads rather than waiting for a free worker."""
    import dask
    import torch
    from distributed import get_worker

    from .training import train_here

    torch.set_num_threads(max(1, get_worker().state.nthreads))
    with dask.config.set(scheduler="threads"):
        return train_here(config, resume, max_epochs, False)


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def _description(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / ENSEMBLE_FILE).read_text())
        if not isinstance(meta, dict) or not isinstance(meta["members"], list):
            raise TypeError("members: a list of member folders")
        float(meta.get("calibration", 1.0))
        return meta
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path / ENSEMBLE_FILE}: not a malaflow ensemble description ({exc})") from None


def ensemble_members(path: Path) -> list[str]:
    """The member folders' names an ensemble folder lists."""
    return [str(name) for name in _description(path)["members"]]


class EnsembleModel:
    """Members that predict the same LDOS on the same energies from the same descriptors.

    What describes the model's inputs and outputs (descriptor, energies, temperature,
    valence, grid spacing, training range, DFT settings, target) is the members' — the
    same for all of them, checked on loading — and read off the first member."""

    SHARED = ("descriptor", "energies", "temperature", "valence", "grid_spacing", "input_range", "dft", "target",
              "variable", "descriptor_plugin", "grid_for", "n_electrons", "outside_training")

    def __init__(self, members: list[Any], calibration: float = 1.0, metadata: dict[str, Any] | None = None):
        if not members:
            raise MalaflowError("an ensemble needs at least one member")
        first = members[0]
        for m in members[1:]:
            if m.descriptor != first.descriptor or not np.array_equal(m.energies, first.energies) \
                    or m.temperature != first.temperature or m.target != first.target:
                raise MalaflowError("ensemble members must share descriptors, energy grid, temperature and target")
        self.members, self.calibration = list(members), float(calibration)
        self.metadata = dict(first.metadata if metadata is None else metadata)  # a hand-made one: the first's

    def __getattr__(self, name: str) -> Any:
        if name in EnsembleModel.SHARED:
            return getattr(self.members[0], name)
        raise AttributeError(name)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleModel:
        from .trained_model import load_model

        path = Path(path)
        meta = _description(path)
        members = [load_model(path / name) for name in ensemble_members(path)]
        return cls(members, float(meta.get("calibration", 1.0)),
                   {**members[0].metadata, "path": str(path.resolve()), "calibrated_on": meta.get("calibrated_on", [])})

    def ldos_of_features(self, device: Any, dtype: Any) -> Any:
        """The members' mean LDOS as a differentiable function of the raw descriptors (the
        forces of an ensemble are those of its mean LDOS's free energy)."""
        import torch

        maps = [m.ldos_of_features(device, dtype) for m in self.members]
        return lambda x: torch.stack([f(x) for f in maps]).mean(dim=0)

    def predict(self, structure: Any, grid_shape: Any = None, chunks: Any = None, descriptors: Any = None,
                device: str = "auto", implementation: str | None = None, precision: str = "float32",
                with_descriptors: bool = False) -> xr.Dataset:
        """The members' mean LDOS as a lazy snapshot dataset, with ``<variable>_members``
        (member, x, y, z, energy) beside it; the descriptors are computed once for all."""
        first = self.members[0].predict(structure, grid_shape, chunks, descriptors, device, implementation,
                                        precision, with_descriptors=True)
        others = [m.predict(structure, grid_shape, chunks, first["descriptors"], device, implementation, precision,
                            warn=False) for m in self.members[1:]]
        variable = self.variable
        members = xr.concat([ds[variable] for ds in [first, *others]], dim="member")
        ds = first if with_descriptors else first.drop_vars("descriptors")
        ds[variable] = members.mean("member")
        ds[f"{variable}_members"] = members
        ds.attrs.update(ensemble_members=len(self.members), ensemble_calibration=self.calibration,
                        provenance={"model": self.metadata.get("path")})
        return ds


def member_dos(ds: xr.Dataset) -> xr.DataArray:
    """The members' DOS (member, energy) in 1/eV of an ensemble prediction (lazy: a caller
    computes it with the other reductions of the same pass over the grid)."""
    members = ds.get("ldos_members")
    if members is None:
        raise MalaflowError("not an ensemble prediction: no 'ldos_members' (predict with an ensemble model)")
    return density_of_states(members, np.array(ds.attrs["cell"]))


def spread(ds: xr.Dataset, scheme: str = "analytic", dos: Any = None, total_energy: bool = False,
           pseudo_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Each observable of an ensemble prediction over its members: their values, their
    mean and their standard deviation times the ensemble's calibration factor. The members'
    DOS come from one pass over the grid (chunk by chunk), or are ``dos`` if computed
    already (:func:`member_dos`); each member's Fermi level is solved from its own DOS at
    the prediction's electron count; ``band_free_energy`` is E_band − TS. ``total_energy``: each member's total free energy too,
    from its own density at its own Fermi level (one more pass over the grid; needs the
    pseudopotentials, see :func:`malaflow.observables.find_pseudopotentials`)."""
    dos = np.asarray(member_dos(ds).values if dos is None else dos)  # (member, energy)
    energies = ds["energy"].values
    temperature, n_e = float(ds.attrs["temperature"]), float(ds.attrs["n_electrons"])
    mus = member_fermi_levels(dos, energies, temperature, n_e, scheme)
    placed = np.isfinite(mus)
    bands, entropies = np.full(len(mus), np.nan), np.full(len(mus), np.nan)
    bands[placed] = [band_energy(d, energies, mu, temperature, scheme) for d, mu in zip(dos[placed], mus[placed])]
    entropies[placed] = [entropy_contribution(d, energies, mu, temperature, scheme)
                         for d, mu in zip(dos[placed], mus[placed])]
    values = {"fermi_energy": mus, "band_energy": bands, "band_free_energy": bands + entropies}
    if total_energy:
        values["total_energy"] = np.full(len(mus), np.nan)
        values["total_energy"][placed] = member_total_energies(ds.isel(member=np.flatnonzero(placed)), mus[placed],
                                                               bands[placed], entropies[placed], scheme, pseudo_dir)
    factor = float(ds.attrs.get("ensemble_calibration", 1.0))
    return {name: {"members": v.tolist(), "mean": float(v[placed].mean()),
                   "std": factor * float(v.std()) if placed.all() else float("inf")}
            for name, v in values.items()}


def member_fermi_levels(dos: np.ndarray, energies: np.ndarray, temperature: float, n_electrons: float,
                        scheme: str) -> np.ndarray:
    """Each member's Fermi level; NaN for a member whose DOS cannot hold the electrons on the
    energy grid. Why not an error: far from its training data a member may predict such a
    DOS while the others do not — the members then disagree beyond what the grid can show,
    which is what σ = ∞ says (a candidate of active learning ranks first), not a failed run.
    If no member can hold them, the prediction as a whole cannot: that is an error."""
    mus, short = [], []
    for k, d in enumerate(dos):
        try:
            mus.append(fermi_level(d, energies, temperature, n_electrons, scheme))
        except ElectronCountError as e:
            mus.append(np.nan)
            short.append(f"member {k}: {e}")
    if len(short) == len(mus):
        raise ElectronCountError(f"no member's DOS can hold the electrons ({'; '.join(short)})")
    if short:
        log.warning("ensemble: %s — σ of every observable is infinite", "; ".join(short))
    return np.array(mus)


def member_densities(ds: xr.Dataset, fermi_levels: Any, scheme: str = "analytic") -> xr.DataArray:
    """The members' electron densities (member, x, y, z) in 1/Å³, each at its own Fermi
    level (lazy: all members from one pass over the LDOS chunks)."""
    energies, temperature = ds["energy"].values, float(ds.attrs["temperature"])
    weights = np.stack([energy_weights(energies, mu, temperature, "fermi", 0, scheme) for mu in fermi_levels])
    n = xr.dot(ds["ldos_members"], xr.DataArray(weights, dims=("member", "energy")), dim="energy")
    n.attrs = {"units": "1/Angstrom^3"}
    return n.transpose("member", ...)


def member_total_energies(ds: xr.Dataset, fermi_levels: Any, bands: Any, entropies: Any, scheme: str,
                          pseudo_dir: str | Path | None = None) -> np.ndarray:
    """Each member's total free energy (eV) from its own density, band energy and −TS."""
    from .observables import find_pseudopotentials
    from .physics.energy import energy_terms

    pseudopotentials = find_pseudopotentials(ds, pseudo_dir)
    densities = member_densities(ds, fermi_levels, scheme).values
    cell, positions, numbers = np.array(ds.attrs["cell"]), ds["positions"].values, ds["numbers"].values
    return np.array([energy_terms(n, cell, positions, numbers, pseudopotentials, band, entropy,
                                  ds.attrs.get("ecutrho")).total_energy
                     for n, band, entropy in zip(densities, bands, entropies)])


def sigma_fields(ds: xr.Dataset, fermi_levels: Any, scheme: str = "analytic") -> xr.Dataset:
    """Per grid point: the calibrated standard deviation over the members of the LDOS and of
    the density (each member's at its own Fermi level), lazy. The factor is the one fitted
    to the band energy on the validation snapshots: for the fields it is an assumption."""
    factor = float(ds.attrs.get("ensemble_calibration", 1.0))
    ldos = factor * ds["ldos_members"].std("member")
    density = factor * member_densities(ds, fermi_levels, scheme).std("member")
    return xr.Dataset({
        "ldos_sigma": ldos.assign_attrs(units="1/(eV*Angstrom^3)", description="ensemble spread, calibrated"),
        "density_sigma": density.assign_attrs(units="1/Angstrom^3", description="ensemble spread, calibrated"),
    })
