"""Size transfer, Be at 298 K: a model trained on 2-atom cells predicts 4- and 8-atom cells
(:func:`size_transfer` is the measurement; benchmarks/transfer_be8.py applies it to a model
trained on 8-atom cells and 36-atom test cells).

The data are those of examples/generate-be{2,4,8}.yaml (Quantum ESPRESSO; generated when
missing — about 25 minutes on 2 cores), the model that of examples/train-be2-298K.yaml
(trained when missing). Per cell size: the errors against DFT (band energy, Fermi level,
density, each side at its own self-consistent Fermi level) and the wall time of DFT
(pw.x + pp.x, from their outputs) beside that of the prediction from the atoms
(descriptors, network, observables; all cores — the DFT runs shared them two at a
time, so each had one). The errors are those `malaflow test` prints (from the stored
descriptors). Writes the predicted vs. DFT DOS of the largest
cell to benchmarks/size-transfer-dos.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .harness import table

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLOT = Path(__file__).resolve().parent / "size-transfer-dos.png"


def main() -> str:
    from malaflow.generate import generate

    for size in (2, 4, 8):
        generate(EXAMPLES / f"generate-be{size}.yaml")
    return size_transfer(EXAMPLES / "train-be2-298K.yaml", ["be2-298K", "be4-298K", "be8-298K"], PLOT)


def size_transfer(training: Path, datasets: list[str], plot: Path) -> str:
    """The model of ``training`` (trained when missing) on the validation and test cells of
    ``datasets``: errors and DFT vs prediction time per cell and per size, and the predicted
    vs DFT DOS of the largest cell in ``plot``."""
    import malaflow
    from malaflow.evaluation import errors_by_size, evaluate_stores
    from malaflow.generate import qe_seconds
    from malaflow.observables import observables
    from malaflow.plots import plot_dos_comparison
    from malaflow.store import open_snapshot

    model = malaflow.load_model(malaflow.train(training))
    cat = malaflow.Catalog.load(REPO / "generated" / "catalog.yaml")
    records = [r for r in cat.records if r.split in ("validation", "test") and r.dataset in datasets]
    results = evaluate_stores(model, {r.id: cat.store_path(r.id) for r in records})
    rows = []
    seconds_dft: dict[int, list[float]] = {}
    seconds_ml: dict[int, list[float]] = {}
    for r, (e, _, reference) in zip(records, results):
        t0 = time.perf_counter()
        observables(model.predict(reference, chunks=32))  # from the atoms: descriptors, network, observables
        seconds = time.perf_counter() - t0
        dft = qe_seconds(cat.resolve(r.source).parent, "WALL")
        rows.append([r.id, r.split, str(e.n_atoms), "×".join(map(str, reference.attrs["grid_shape"])),
                     f"{e.band_energy_mev_per_atom:.2f}", f"{e.fermi_mev:.1f}", f"{e.density_relative:.4f}",
                     f"{100 * e.outside_training:.1f} %", f"{dft:.0f}", f"{seconds:.1f}"])
        seconds_dft.setdefault(e.n_atoms, []).append(dft)
        seconds_ml.setdefault(e.n_atoms, []).append(seconds)
    largest, predicted, reference = max(results, key=lambda r: r[0].n_atoms)
    id, n_atoms = largest.snapshot, largest.n_atoms
    trained = model.metadata
    sizes_trained = sorted({int(open_snapshot(cat.store_path(i)).sizes["atom"]) for i in trained["training_snapshots"]})
    atoms = "/".join(map(str, sizes_trained))
    plot_dos_comparison(predicted, reference, plot, title=f"{id} ({n_atoms} atoms), trained on {atoms}-atom cells")
    head = (f"model {training.relative_to(REPO)}: {len(trained['training_snapshots'])} training cells of {atoms} "
            f"atoms, {trained['epochs_done']} epochs; DOS plot of {id}: {plot.relative_to(REPO)}\n\n")
    per_snapshot = table(rows, ["snapshot", "split", "atoms", "grid", "ΔE_band meV/atom", "ΔE_F meV",
                                "density rel.", "extrapolated", "DFT s", "predict s"])
    sizes = errors_by_size([e for e, _, _ in results])
    speed = "\n".join(f"{n} atoms: DFT {np.mean(seconds_dft[n]):.0f} s, prediction {np.mean(seconds_ml[n]):.1f} s"
                      for n in sorted(seconds_dft))
    return f"{head}{per_snapshot}\n\nper cell size:\n\n```\n{sizes}\n```\n\n{speed}"
