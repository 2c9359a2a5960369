"""Pictures a person would rather look at than read: DOS with its Fermi level, density slices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import ParameterError
from .observables import observables, target_of


def _subplots(*grid: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its axes made without pyplot: no backend is chosen or switched (a
    notebook's stays as it was), and nothing is left in pyplot's figure registry."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_dos(ds: xr.Dataset, path: str | Path, scheme: str = "analytic", target: str | None = None, *,
             dos: xr.DataArray | None = None, obs: Any = None, members: xr.DataArray | None = None) -> Path:
    """PNG of D(ε) with the self-consistent Fermi level (and the DFT one, if stored); an
    ensemble's prediction with the band of its members' spread. A caller that has the DOS,
    the observables and (ensembles) the members' DOS from its own pass over a prediction
    passes them, so that the grid is not predicted again for the picture."""
    plugin = target_of(ds, target)
    if dos is None:
        dos = plugin.dos(ds)
        if "ldos_members" in ds:  # an ensemble: its members' DOS, in the pass that gives the DOS
            import dask

            from .ensemble import member_dos

            dos, members = dask.compute(dos, member_dos(ds))
    if obs is None:
        obs = plugin.observables(ds, scheme=scheme)
    fig, ax = _subplots(figsize=(6, 4))
    ax.plot(dos["energy"], dos.values, "o-" if dos.sizes["energy"] <= 40 else "-", label="DOS from the LDOS")
    if members is not None:  # the band of the members' calibrated spread
        sigma = float(ds.attrs.get("ensemble_calibration", 1.0)) * members.std("member").values
        ax.fill_between(dos["energy"], dos.values - sigma, dos.values + sigma, color="C0", alpha=0.3, lw=0,
                        label=f"±σ over {ds.sizes['member']} members (calibrated)")
    ax.axvline(obs.fermi_energy, color="C3", ls="--", label=f"E_F = {obs.fermi_energy:.4f} eV ({scheme})")
    if ds.attrs.get("fermi_energy") is not None:
        ax.axvline(ds.attrs["fermi_energy"], color="0.4", ls=":", label=f"DFT E_F = {ds.attrs['fermi_energy']:.4f} eV")
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (1/eV)")
    ax.set_title(f"T = {obs.temperature:.0f} K, N = {obs.n_electrons:.4f}, E_band = {obs.band_energy:.4f} eV")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_dos_comparison(predicted: xr.Dataset, reference: xr.Dataset, path: str | Path,
                        scheme: str = "analytic", title: str = "") -> Path:
    """PNG of the predicted DOS over the reference one, each with its Fermi level."""
    target = target_of(predicted)
    fig, ax = _subplots(figsize=(6, 4))
    few = reference.sizes.get("energy", 0) <= 40  # markers only where the points can be told apart
    for ds, label, color in ((reference, "DFT LDOS", "0.3"), (predicted, "predicted", "C0")):
        obs = observables(ds, target.name, scheme=scheme)
        dos = target.dos(ds)
        style = ("o-" if few else "-") if label == "DFT LDOS" else ("s--" if few else "--")
        ax.plot(dos["energy"], dos.values, style, color=color, lw=1.2,
                label=f"{label}: E_F = {obs.fermi_energy:.3f} eV, E_band = {obs.band_energy:.4f} eV")
        ax.axvline(obs.fermi_energy, color=color, ls=":")
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (1/eV)")
    ax.set_title(title or "DOS: prediction vs. DFT")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_density_slice(
    ds: xr.Dataset, path: str | Path, axis: str = "z", index: int | None = None,
    scheme: str = "analytic", target: str | None = None,
) -> Path:
    """PNG of the electron density n(r) on one grid plane (default: the middle z plane)."""
    if axis not in ("x", "y", "z"):
        raise ParameterError(f"the plane's normal axis is x, y or z, got {axis!r}")
    size = ds.sizes[axis]
    index = size // 2 if index is None else index
    if not 0 <= index < size:
        raise ParameterError(f"plane index {index} is outside the grid: {axis} runs from 0 to {size - 1}")
    plugin = target_of(ds, target)
    obs = plugin.observables(ds, scheme=scheme)
    n = plugin.density(ds, obs.fermi_energy, scheme)
    plane = n.isel({axis: index}).values  # only this plane is computed
    fig, ax = _subplots(figsize=(5, 4))
    im = ax.imshow(np.asarray(plane).T, origin="lower", cmap="viridis")
    fig.colorbar(im, ax=ax, label="n (1/Å³)")
    dims = [d for d in ("x", "y", "z") if d != axis]
    ax.set_xlabel(f"{dims[0]} (grid index)")
    ax.set_ylabel(f"{dims[1]} (grid index)")
    ax.set_title(f"electron density, {axis} = {index}")
    return _save(fig, path)


def plot_study_history(study: Any, label: str, path: str | Path) -> Path:
    """PNG of a hyperparameter study: the objective of each trial with the best so far
    (left), and each trial's objective against its epochs, pruned ones dashed (right)."""
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = _subplots(1, 2, figsize=(11, 4))
    best, front = float("inf"), []
    for t in study.trials:
        if t.value is None:
            continue
        complete = t.state.name == "COMPLETE"
        left.plot(t.number, t.value, "o" if complete else "x", color="C0" if complete else "0.6")
        if complete:
            best = min(best, t.value)
            front.append((t.number, best))
        steps = sorted(t.intermediate_values)
        right.plot(steps, [t.intermediate_values[s] for s in steps], "-" if complete else "x--",
                   color="C0" if complete else "0.6", lw=1, ms=4)
    if front:
        numbers, values = zip(*front)
        left.step(numbers, values, where="post", color="C3", label="best so far")
        left.legend(fontsize=8)
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_ylabel(label)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("trial (o finished, x pruned)")
    right.set_xlabel("epoch (solid finished, dashed pruned)")
    left.set_title("optimization history")
    right.set_title("objective during training")
    return _save(fig, path)


def plot_param_importances(importances: dict[str, float], path: str | Path) -> Path:
    """PNG bar chart: how much each parameter matters to the objective."""
    names = list(importances)[::-1]
    fig, ax = _subplots(figsize=(6, 0.5 + 0.4 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (Optuna's evaluator, sums to 1)")
    ax.set_title("parameter importances")
    return _save(fig, path)


def plot_ionic_structure(rdf: tuple[np.ndarray, np.ndarray], ssf: tuple[np.ndarray, np.ndarray],
                         tpcf: tuple[np.ndarray, np.ndarray], path: str | Path, title: str = "") -> Path:
    """g(r), S(k) and the equilateral cut g₃(r, r, r) side by side."""
    fig, (a, b, c) = _subplots(1, 3, figsize=(12, 3.6))
    a.plot(*rdf)
    a.axhline(1.0, color="grey", lw=0.5)
    a.set(xlabel="r (Å)", ylabel="g(r)", title=title)
    b.plot(*(x[np.isfinite(ssf[1])] for x in ssf), ".-", ms=3)
    b.set(xlabel="k (1/Å)", ylabel="S(k)", yscale="log")
    centres, g3 = tpcf
    c.plot(centres, np.diagonal(np.diagonal(g3)))
    c.set(xlabel="r (Å)", ylabel="g₃(r, r, r)")
    return _save(fig, path)


def plot_learning_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """PNG of active-learning runs ({label: rounds}): the held-out cells' mean |error| (solid)
    and mean σ (dashed) of the band energy against the training cells (left), and the
    candidates' mean σ per round (right)."""
    fig, (left, right) = _subplots(1, 2, figsize=(11, 4))
    for k, (label, records) in enumerate(runs.items()):
        color = f"C{k}"
        rows = [r for r in records if r.get("held_out_error") is not None]
        if rows:
            cells = [r["training_cells"] for r in rows]
            left.plot(cells, [r["held_out_error"] for r in rows], "o-", color=color, label=f"{label}: |error|")
            left.plot(cells, [r["held_out_sigma"] for r in rows], "s--", color=color, label=f"{label}: σ")
        rows = [r for r in records if r.get("candidate_sigma_mean") is not None]
        right.plot([r["round"] for r in rows], [r["candidate_sigma_mean"] for r in rows], "o-", color=color, label=label)
    left.set_xlabel("training cells")
    left.set_ylabel("held-out band energy (meV/atom)")
    left.set_title("held-out cells: mean |error| and mean σ")
    right.set_xlabel("round")
    right.set_ylabel("mean σ of the candidates (meV/atom)")
    right.set_title("candidates' σ")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    return _save(fig, path)
