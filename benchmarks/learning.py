"""Active learning against its control, Be: examples/learn-be2.yaml (cells labelled where the
ensemble's σ is largest) beside examples/learn-be2-random.yaml (the same loop choosing at random),
from the demo's 2 training cells at 298 K, on 16 held-out cells displaced 3× as far as at 298 K
(examples/generate-be2-hotter.yaml: 4; examples/generate-be2-learn-hotter.yaml: 12 more; loops
recorded on other held-out cells are re-scored with their kept round models). Each arm runs with
LOOP_SEEDS loop seeds (other candidates, other random choices, other members' seeds), since one
loop's held-out error swings from round to round by more than the arms differ; the goal is judged
on the mean over the seeds. Loops run seed by seed, both arms each (so a stopped run has compared
them on the same seeds); data generated and loops run when missing (each loop ~15–30 minutes on 2
cores; run again to go on). Writes benchmarks/learning-curves.png."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLOT = Path(__file__).resolve().parent / "learning-curves.png"
RUNS = {"by σ": "learn-be2.yaml", "random": "learn-be2-random.yaml"}
LOOP_SEEDS = (0, 1, 2)
#: the first held-out set, whose mean is printed beside that of all held-out cells
FIRST_HELD_OUT = "be2-2700K-displaced"


def loop_config(name: str, seed: int):
    """The example's loop with loop seed ``seed`` (seed 0 is the example itself; others write
    to OUTPUT-sN and label into dataset DATASET-sN)."""
    from malaflow.active_learning import LearnConfig

    config = LearnConfig.load(EXAMPLES / name)
    if seed == 0:
        return config
    return dataclasses.replace(config, seed=seed, output=f"{config.output}-s{seed}", dataset=f"{config.dataset}-s{seed}")


def held_out_mean(record: dict, prefix: str = "") -> float:
    """Mean |band-energy error| (meV/atom) of a round over its held-out cells whose ids start with
    ``prefix``, leaving out cells whose prediction could not place the electrons (NaN; the rounds'
    tables count them)."""
    return float(np.nanmean([abs(c["error"]) for cell, c in record["held_out"].items() if cell.startswith(prefix)]))


def summary(runs: dict[str, list[list[dict]]], prefix: str = "") -> dict[str, dict[str, np.ndarray]]:
    """Per arm and round: DFT core-minutes (mean over seeds) and the held-out mean |error|'s
    mean, minimum and maximum over the seeds (held-out cells whose ids start with ``prefix``)."""
    out = {}
    for label, loops in runs.items():
        rounds = min(len(records) for records in loops)
        errors = np.array([[held_out_mean(records[r], prefix) for r in range(rounds)] for records in loops])
        minutes = np.array([[records[r]["dft_core_minutes"] for r in range(rounds)] for records in loops])
        out[label] = {"cells": np.array([loops[0][r]["training_cells"] for r in range(rounds)]),
                      "minutes": minutes.mean(axis=0), "mean": errors.mean(axis=0),
                      "min": errors.min(axis=0), "max": errors.max(axis=0), "loops": errors}
    return out


def plot(summaries: dict[str, dict[str, np.ndarray]], path: Path, cells: int) -> None:
    """Held-out mean |error| per round: each loop thin, the mean over the seeds thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (label, s) in enumerate(summaries.items()):
        for loop in s["loops"]:
            ax.plot(s["minutes"], loop, "-", color=f"C{k}", alpha=0.3, lw=1)
        ax.plot(s["minutes"], s["mean"], "o-", color=f"C{k}", lw=2.5, label=f"{label}: mean of {len(s['loops'])} loops")
    ax.set_yscale("log")
    ax.set_xlabel("DFT core-minutes of the acquired cells")
    ax.set_ylabel("held-out mean |ΔE_band| (meV/atom)")
    ax.set_title(f"Active learning on Be2: {cells} held-out cells displaced 3× as far as at 298 K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> str:
    from malaflow.active_learning import learn, rounds_table
    from malaflow.generate import generate

    for name in ("demo", "be2-heldout", "be2-hotter", "be2-learn-hotter"):
        generate(EXAMPLES / f"generate-{name}.yaml")
    runs: dict[str, list] = {label: [] for label in RUNS}
    for seed in LOOP_SEEDS:
        for label, name in RUNS.items():
            runs[label].append(learn(loop_config(name, seed)))
    cells = len(next(iter(runs.values()))[0][0]["held_out"])
    plot(summary(runs), PLOT, cells)
    parts = [f"plot: {PLOT.relative_to(REPO)}"]
    for label, loops in runs.items():
        for seed, records in zip(LOOP_SEEDS, loops):
            parts.append(f"cells chosen {label}, loop seed {seed} ({RUNS[label]})\n\n```\n{rounds_table(records)}\n```")
    for title, prefix in ((f"all {cells} held-out cells", ""), (f"the first 4 ({FIRST_HELD_OUT})", FIRST_HELD_OUT)):
        parts.append(comparison(summary(runs, prefix), title))
    return "\n\n".join(parts)


def comparison(summaries: dict[str, dict[str, np.ndarray]], title: str) -> str:
    """Per round, each arm's held-out mean |error| over the seeds (min, mean, max), and the
    ratio of the arms' means at each DFT budget."""
    header = f"{'round':>5} {'cells':>5} " + " ".join(f"{f'{label}: min':>10} {'mean':>7} {'max':>7}"
                                                       for label in summaries)
    lines = [header]
    first = next(iter(summaries.values()))
    for r, cells in enumerate(first["cells"]):
        lines.append(f"{r:5d} {cells:5d} " + " ".join(f"{s['min'][r]:10.1f} {s['mean'][r]:7.1f} {s['max'][r]:7.1f}"
                                                       for s in summaries.values()))
    ours, control = (summaries[k]["mean"] for k in RUNS)
    ratios = ", ".join(f"{m:.1f} min: {o / c:.2f}" for m, o, c in zip(first["minutes"][1:], ours[1:], control[1:]))
    return (f"held-out mean |ΔE_band| (meV/atom) on {title}, over the loop seeds, per round:\n\n```\n" +
            "\n".join(lines) + "\n```\n\n" + f"mean held-out error by σ / random at each DFT budget: {ratios} (goal ≤ 0.5)")
