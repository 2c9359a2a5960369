"""Training benchmark on MALA's Be2 split (train 0, 1 / validate 2 / test 3), from the
same precomputed bispectrum descriptors (MALA's *.in.npy files) on both sides.

Rows: MALA 1.4.0 with its example settings (ex01: 91 → 100 → 11 ReLU, Adam lr 1e-5,
batch 40, 100 epochs, feature-wise standard inputs, min-max outputs); malaflow with
the same settings; malaflow with its own example settings (examples/train-be2.yaml).
Errors on snapshot 3 as MALA's Tester defines them: band energy (meV/atom) and Fermi
level (meV), each from the predicted and the DFT LDOS at its own self-consistent Fermi
level.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .harness import measure, table

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mala-test-data" / "Be2"
TRAIN_POINTS = 2 * 18 * 18 * 27

MALA_SETTINGS = dict(layers=[100], learning_rate=1e-5, batch_size=40, epochs=100,
                     input_scaling="standard", output_scaling="global-minmax", schedule="none", early_stopping=0)
OUR_SETTINGS = dict(layers=[200], learning_rate=3e-4, batch_size=32, epochs=100,
                    input_scaling="standard", output_scaling="standard", schedule="plateau", early_stopping=20)


def mala(data: str) -> dict:
    import mala as m

    from .mala_inputs import be2_parameters, ex01

    p = ex01(be2_parameters(epochs=100))
    handler = m.DataHandler(p)
    for i, kind in ((0, "tr"), (1, "tr"), (2, "va"), (3, "te")):
        handler.add_snapshot(f"Be_snapshot{i}.in.npy", data, f"Be_snapshot{i}.out.npy", data, kind,
                             calculation_output_file=os.path.join(data, f"Be_snapshot{i}.info.json"))
    handler.prepare_data()
    p.network.layer_sizes = [handler.input_dimension, 100, handler.output_dimension]
    network = m.Network(p)
    trainer = m.Trainer(p, network, handler)
    t0 = time.perf_counter()
    trainer.train_network()
    seconds = time.perf_counter() - t0
    tester = m.Tester(p, network, handler)
    tester.observables_to_test = ["band_energy", "fermi_energy"]
    tester.output_format = "list"
    result = tester.test_snapshot(0)
    return {"seconds": seconds, "band_mev": float(result["band_energy"]),
            "fermi_mev": 1000.0 * float(result["fermi_energy"])}


def malaflow(data: str, settings: str) -> dict:
    import malaflow as mf
    from malaflow.catalog import Catalog
    from malaflow.evaluation import evaluate_store

    s = MALA_SETTINGS if settings == "mala" else OUR_SETTINGS
    work = Path(tempfile.mkdtemp())
    try:
        cat = Catalog(work / "catalog.yaml")
        for i, split in enumerate(["train", "train", "validation", "test"]):
            cat.add(Path(data) / f"Be_snapshot{i}.out.npy", reader="mala", id=f"be2-{i}", split=split,
                    descriptor_params="mala")
        config = mf.TrainingConfig(
            output=str(work / "model"), catalog=str(cat.path), descriptor={"plugin": "bispectrum", "params": {}},
            model={"plugin": "feedforward", "params": {"layers": s["layers"]}}, epochs=s["epochs"],
            batch_size=s["batch_size"], learning_rate=s["learning_rate"], input_scaling=s["input_scaling"],
            output_scaling=s["output_scaling"], schedule=s["schedule"], early_stopping=s["early_stopping"],
        )
        t0 = time.perf_counter()
        path = mf.train(config, progress=False)  # descriptors are a cache hit: MALA's .in.npy
        seconds = time.perf_counter() - t0
        errors = evaluate_store(mf.load_model(path), cat.store_path("be2-3"))
        epochs = len(json.loads((Path(path) / "history.json").read_text()))
        return {"seconds": seconds, "band_mev": errors.band_energy_mev_per_atom, "fermi_mev": errors.fermi_mev,
                "epochs": epochs}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> str:
    if not DATA.is_dir():
        return f"(skipped: no Be2 data at {DATA})"
    runs = [
        ("MALA 1.4.0, its example settings", measure("benchmarks.training", "mala", str(DATA))),
        ("malaflow, MALA's settings", measure("benchmarks.training", "malaflow", str(DATA), "mala")),
        ("malaflow, examples/train-be2.yaml", measure("benchmarks.training", "malaflow", str(DATA), "ours")),
    ]
    mala_seconds = runs[0][1].seconds
    rows = []
    for label, m in runs:
        if m.seconds is None:
            rows.append([label, "-", "-", "-", "-", "-", "-", m.note])
            continue
        epochs = m.extra.get("epochs", 100)  # MALA runs all 100 (no early stopping)
        rows.append([
            label, f"{m.seconds:.1f}", f"{epochs}", f"{TRAIN_POINTS * epochs / m.seconds:,.0f}",
            f"{m.extra['band_mev']:+.2f}", f"{m.extra['fermi_mev']:+.2f}",
            f"{m.seconds / mala_seconds:.2f}" if mala_seconds else "-", f"{m.peak_mb:.0f}",
        ])
    return table(rows, ["run", "train s", "epochs", "points/s", "ΔE_band meV/atom", "ΔE_F meV",
                        "time : MALA", "peak MB"])
