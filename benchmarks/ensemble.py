"""Error bars that hold, Be at 298 K: an ensemble of 5 networks (examples/train-be2-ensemble.yaml)
against one network of the same settings trained on all the data (examples/train-be2-single.yaml),
on held-out Be2 cells like the training data and on cells whose atoms are displaced 2× and 3×
further (out of distribution).

The data are those of examples/generate-demo.yaml (2 training cells, 1 validation, 1 test) and
examples/generate-be2-{train,heldout,hot,hotter}.yaml (6 more training cells, 3 more validation
cells, 7 + 4 + 4 test cells), generated when missing (Quantum ESPRESSO, ~20 s per cell). The errors are against each cell's own
DFT LDOS (band energy at each side's self-consistent Fermi level), as `malaflow test` prints them;
σ is the ensemble's calibrated spread. The same ensemble without resampling (members differing
by seed only) is summarised beside it. Writes the error-vs-σ plot to benchmarks/ensemble-sigma.png.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .harness import table

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLOT = Path(__file__).resolve().parent / "ensemble-sigma.png"
#: datasets of the held-out cells, and what they are
SETS = {"be2-298K-demo": "298 K", "be2-298K-heldout": "298 K", "be2-1200K-displaced": "2× displaced",
        "be2-2700K-displaced": "3× displaced"}
LARGE, SMALL = 50.0, 25.0  # meV/atom: an error above LARGE must come with σ above SMALL


def main() -> str:
    import malaflow
    from malaflow.evaluation import evaluate_stores
    from malaflow.generate import generate

    for name in ("demo", "be2-train", "be2-heldout", "be2-hot", "be2-hotter"):
        generate(EXAMPLES / f"generate-{name}.yaml")
    ensemble = malaflow.load_model(malaflow.train(EXAMPLES / "train-be2-ensemble.yaml"))
    single = malaflow.load_model(malaflow.train(EXAMPLES / "train-be2-single.yaml"))
    bagged = malaflow.TrainingConfig.load(EXAMPLES / "train-be2-ensemble.yaml")
    seeds_only = malaflow.load_model(malaflow.train(dataclasses.replace(
        bagged, bootstrap=False, output=str(Path(bagged.output).with_name("be2-ensemble-seeds")))))
    cat = malaflow.Catalog.load(REPO / "generated" / "demo-catalog.yaml")
    records = [r for r in cat.records if r.split == "test" and r.dataset in SETS]
    stores = {r.id: cat.store_path(r.id) for r in records}
    results = evaluate_stores(ensemble, stores)
    both = [e for e, _, _ in results]
    members = [float(members_errors(predicted, reference).mean()) for _, predicted, reference in results]
    alone = [e for e, _, _ in evaluate_stores(single, stores)]
    seeds_results = evaluate_stores(seeds_only, stores)
    seeds = [e for e, _, _ in seeds_results]
    per_seed = {kind: np.mean([members_errors(p, ref) for r, (_, p, ref) in zip(records, seeds_results)
                               if SETS[r.dataset] == kind], axis=0) for kind in dict.fromkeys(SETS.values())}
    rows, points = [], []
    for r, e, s, m in zip(records, both, alone, members):
        err, sigma = e.band_energy_mev_per_atom, e.band_energy_sigma_mev_per_atom
        points.append((SETS[r.dataset], abs(s.band_energy_mev_per_atom), abs(err), sigma, m))
        rows.append([r.id, SETS[r.dataset], f"{s.band_energy_mev_per_atom:+.1f}", f"{err:+.1f}", f"{sigma:.1f}",
                     f"{abs(err) / sigma:.2f}", "yes" if abs(err) <= 2 * sigma else "NO",
                     f"{100 * e.outside_training:.1f} %"])
    plot(points, ensemble.calibration)
    return (f"ensemble: {len(ensemble.members)} members, calibration factor {ensemble.calibration:.2f} "
            f"(fitted on {len(ensemble.metadata.get('calibrated_on', [])) or 'the'} validation cells); "
            f"plot: {PLOT.relative_to(REPO)}\n\n"
            + table(rows, ["snapshot", "cells", "single ΔE_band meV/atom", "ensemble ΔE_band", "σ", "|Δ|/σ",
                           "within 2σ", "extrapolated"])
            + "\n\n" + summary(points)
            + f"\n\nthe same ensemble without resampling (members differ by seed only; calibration factor "
            f"{seeds_only.calibration:.2f}):\n\n"
            + summary([(SETS[r.dataset], abs(s.band_energy_mev_per_atom), abs(e.band_energy_mev_per_atom),
                        e.band_energy_sigma_mev_per_atom) for r, e, s in zip(records, seeds, alone)])
            + f"\n\nsingle networks of seeds {bagged.seed}–{bagged.seed + bagged.ensemble - 1} (the seeds-only "
            f"ensemble's members, each trained on all the points; the first is the single network above), "
            f"mean |ΔE_band| meV/atom per seed:\n\n"
            + "\n".join(f"{kind}: {', '.join(f'{v:.1f}' for v in values)} (mean {values.mean():.1f})"
                        for kind, values in per_seed.items()))


def members_errors(predicted, reference) -> np.ndarray:
    """|ΔE_band| (meV/atom) of each of an ensemble's members alone (its own Fermi level): what
    one network of the ensemble's settings makes, seed by seed."""
    from malaflow import observables, spread

    values = np.array(spread(predicted)["band_energy"]["members"])
    return 1000.0 * np.abs(values - observables(reference).band_energy) / reference.sizes["atom"]


def summary(points: list[tuple]) -> str:
    """Mean absolute errors per kind of cell (the single network, the ensemble's mean, and —
    given — its members alone), the 2σ coverage, and the large errors with small σ."""
    lines = []
    for kind in dict.fromkeys(p[0] for p in points):
        group = [p for p in points if p[0] == kind]
        members = f", its members alone {np.mean([p[4] for p in group]):.1f}" if len(group[0]) > 4 else ""
        lines.append(f"{kind}: {len(group)} cells, mean |ΔE_band| single {np.mean([p[1] for p in group]):.1f}, "
                     f"ensemble {np.mean([p[2] for p in group]):.1f}{members} meV/atom; "
                     f"mean σ {np.mean([p[3] for p in group]):.1f}")
    covered = sum(p[2] <= 2 * p[3] for p in points)
    silent = [p for p in points if p[2] > LARGE and p[3] <= SMALL]
    lines.append(f"within the calibrated 2σ: {covered} of {len(points)} ({covered / len(points):.0%}; goal ≥ 80 %)")
    lines.append(f"errors above {LARGE:.0f} meV/atom with σ at most {SMALL:.0f}: {len(silent)} (goal 0)")
    return "\n".join(lines)


def plot(points: list[tuple], calibration: float) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for k, kind in enumerate(dict.fromkeys(p[0] for p in points)):
        group = [p for p in points if p[0] == kind]
        ax.loglog([p[3] for p in group], [p[2] for p in group], "os^v"[k % 4], label=kind)
    lo = min(min(p[3] for p in points), min(p[2] for p in points)) / 2
    hi = max(max(p[3] for p in points), max(p[2] for p in points)) * 2
    ax.plot([lo, hi], [2 * lo, 2 * hi], "k--", lw=1, label="|error| = 2σ")
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="|error| = σ")
    ax.set_xlabel(f"calibrated σ of the band energy (meV/atom; factor {calibration:.2f})")
    ax.set_ylabel("|ensemble error| of the band energy (meV/atom)")
    ax.set_title("Be2, 5-member ensemble: error vs. predicted σ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    return PLOT
