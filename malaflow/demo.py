"""`malaflow demo`: the main job, end to end, on the Be data shipped in the repo.

Ingest the catalogued raw files into Zarr stores, compute the SNAP bispectrum
descriptors of every snapshot with LAMMPS into its store (snapshots in parallel),
summarise each snapshot with its observables from the LDOS beside the DFT reference,
train a network on the training split (validating on the validation split), predict
the LDOS of the test snapshot chunk by chunk, and show its observables and errors
beside the DFT reference, with a plot of predicted vs. DFT DOS.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from tqdm import tqdm

from .catalog import Catalog
from .compute import compute_descriptors
from .observables import observables_table
from .trained_model import load_model
from .evaluation import compare, errors_table
from .plots import plot_dos, plot_dos_comparison
from .training import TrainingConfig, train
from .store import list_descriptors, load_snapshot, open_snapshot


def run_demo(catalog_path: str | Path) -> Catalog:
    cat = Catalog.load(catalog_path)
    typer.echo(f"malaflow demo — catalog {cat.path}\n")
    missing = [r.id for r in cat.records if not cat.resolve(r.store).exists()]
    for id in tqdm(missing, desc="ingest raw files → Zarr", unit="snapshot", disable=not missing):
        cat.ingest([id])
    typer.echo(f"{len(missing)} store(s) written, {len(cat.records) - len(missing)} already present\n")
    stores = [cat.resolve(r.store) for r in cat.records]
    todo = [p for p in stores if "bispectrum" not in list_descriptors(p)]
    t0 = time.perf_counter()
    compute_descriptors(todo, "bispectrum")
    typer.echo(
        f"bispectrum descriptors (LAMMPS sna/grid, twojmax 10 → 91 features): {len(todo)} computed "
        f"in {time.perf_counter() - t0:.1f} s, {len(stores) - len(todo)} already present\n"
    )
    indent = lambda text: "  " + text.replace("\n", "\n  ")  # noqa: E731
    for r in cat.records:
        typer.echo(f"[{r.id}] split={r.split or '-'}  store={r.store}")
        typer.echo(indent(load_snapshot(cat.resolve(r.store)).summary()))
        typer.echo(indent(observables_table(open_snapshot(cat.resolve(r.store)))) + "\n")
    out = cat.root / "demo-output"
    out.mkdir(exist_ok=True)
    typer.echo("training a feed-forward network (91 → 200 → 11) on the training split …")
    t0 = time.perf_counter()
    model = load_model(train(demo_training_config(cat, out / "model")))
    typer.echo(f"trained in {time.perf_counter() - t0:.1f} s: {out / 'model'}\n")
    for r in cat.query(split="test"):
        reference = open_snapshot(cat.resolve(r.store))
        predicted = model.predict(reference, chunks=9)
        for key in ("reference", "fermi_energy"):
            predicted.attrs[key] = reference.attrs[key]
        typer.echo(f"[{r.id}] LDOS predicted from the atoms alone, beside DFT:")
        typer.echo(indent(observables_table(predicted)))
        typer.echo(indent(errors_table([compare(predicted, reference, r.id)])) + "\n")
        typer.echo(f"DOS plot of {r.id}: {plot_dos(reference, out / f'dos-{r.id}.png')}")
        picture = plot_dos_comparison(predicted, reference, out / f"dos-predicted-{r.id}.png",
                                      title=f"{r.id}: predicted vs. DFT DOS")
        typer.echo(f"predicted vs. DFT DOS of {r.id}: {picture}")
    return cat


def demo_training_config(cat: Catalog, output: Path) -> TrainingConfig:
    """The settings of examples/train-be2.yaml, on this catalog."""
    return TrainingConfig(
        output=str(output), catalog=str(cat.path), descriptor={"plugin": "bispectrum", "params": {}},
        model={"plugin": "feedforward", "params": {"layers": [200], "activation": "relu"}},
        epochs=100, batch_size=32, learning_rate=3e-4, early_stopping=20, checkpoint_every=10, seed=0,
    )
