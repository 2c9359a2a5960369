"""Active learning against its control, Be at 298 K: examples/learn-be2.yaml (cells labelled where
the ensemble's σ is largest) beside examples/learn-be2-random.yaml (the same loop choosing at
random), from the demo's 2 training cells, on the 8 displaced held-out cells of
examples/generate-be2-hot{,ter}.yaml. Data generated and loops run when missing (each ~20–40
minutes on 2 cores; run again to go on). Writes both curves to benchmarks/learning-curves.png.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLOT = Path(__file__).resolve().parent / "learning-curves.png"
RUNS = {"by σ": "learn-be2.yaml", "random": "learn-be2-random.yaml"}


def main() -> str:
    from malaflow.active_learning import learn, rounds_table
    from malaflow.generate import generate
    from malaflow.plots import plot_learning_curves

    for name in ("demo", "be2-heldout", "be2-hot", "be2-hotter"):
        generate(EXAMPLES / f"generate-{name}.yaml")
    runs = {label: learn(EXAMPLES / name) for label, name in RUNS.items()}
    plot_learning_curves(runs, PLOT)
    parts = [f"plot: {PLOT.relative_to(REPO)}"]
    for label, records in runs.items():
        first, last = records[0], records[-1]
        parts.append(f"### cells chosen {label} ({RUNS[label]})\n\n```\n{rounds_table(records)}\n```\n\n"
                     f"held-out mean |ΔE_band| {first['held_out_error']:.1f} → {last['held_out_error']:.1f} meV/atom "
                     f"({last['held_out_error'] / first['held_out_error']:.0%} of the start) with "
                     f"{last['training_cells'] - first['training_cells']} DFT cells, "
                     f"{last['dft_core_minutes']:.1f} core-minutes")
    ours, control = (runs[k][-1]["held_out_error"] for k in RUNS)
    parts.append(f"final held-out error, by σ / random: {ours / control:.2f} (goal ≤ 0.5)")
    return "\n\n".join(parts)
