"""`malaflow demo [DIR]`: the main job, end to end, on the Be dataset shipped with the package.

The shipped snapshots (four 2-atom Be cells at 298 K that malaflow generated with QE, on an
LDOS energy grid fine enough that the LDOS reproduces pw.x's Fermi level and energies) are
ingested into Zarr stores in DIR; the SNAP bispectrum descriptors of every snapshot are
computed with LAMMPS; each snapshot's observables from its LDOS are shown beside pw.x's; a
network is trained on the training split (validated on the validation split); the LDOS of
the test snapshot is predicted from its atoms alone, chunk by chunk, and its Fermi level,
band energy and total free energy are shown beside pw.x's and its own LDOS's, with a plot of
the predicted vs. DFT DOS. Everything is written into DIR, never beside the package.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import typer
import xarray as xr

from .catalog import Catalog
from .compute import compute_descriptors
from .errors import MalaflowError
from .evaluation import compare
from .observables import energy_terms_from, observables
from .plots import plot_dos_comparison
from .store import list_descriptors, open_snapshot
from .trained_model import load_model
from .training import TrainingConfig, train

#: the catalog of the shipped demo dataset (read-only: the demo writes a copy into DIR)
SHIPPED_CATALOG = Path(__file__).resolve().parent / "demo_data" / "catalog.yaml"


def demo_catalog(folder: str | Path) -> Catalog:
    """The demo's catalog in ``folder`` (made on first use): the shipped snapshots, read
    from the package, with their stores in ``folder/stores``."""
    folder = Path(folder)
    path = folder / "catalog.yaml"
    if path.is_file():
        return Catalog.load(path)
    if folder.exists() and not folder.is_dir():
        raise MalaflowError(f"{folder}: not a folder; the demo writes its stores and outputs into a folder")
    shipped = Catalog.load(SHIPPED_CATALOG)
    folder.mkdir(parents=True, exist_ok=True)
    cat = Catalog(path, datasets=shipped.datasets, store_dir=shipped.store_dir)
    cat.records = [
        dataclasses.replace(
            r, source=cat.relative(shipped.resolve(r.source)), store=f"{cat.store_dir}/{r.id}.zarr",
            raw={cat.relative(shipped.resolve(file)): digest for file, digest in r.raw.items()},
        )
        for r in shipped.records
    ]
    cat.save()
    return cat


def run_demo(folder: str | Path = "malaflow-demo") -> Catalog:
    t_start = time.perf_counter()
    cat = demo_catalog(folder)
    typer.echo(f"malaflow demo — {len(cat.records)} Be snapshots (2 atoms, 298 K), catalog {cat.path}\n")
    written = cat.ingest()
    typer.echo(f"{len(written)} Zarr store(s) written, {len(cat.records) - len(written)} already present")
    stores = {r.id: cat.resolve(r.store) for r in cat.records}
    todo = [p for p in stores.values() if "bispectrum" not in list_descriptors(p)]
    t0 = time.perf_counter()
    compute_descriptors(todo, "bispectrum")
    typer.echo(f"bispectrum descriptors (LAMMPS sna/grid, twojmax 10 → 91 features): {len(todo)} computed "
               f"in {time.perf_counter() - t0:.1f} s, {len(stores) - len(todo)} already present\n")

    typer.echo("DFT (pw.x) beside the same quantities from each snapshot's LDOS:")
    typer.echo(agreement_table({r.id: (r.split, open_snapshot(stores[r.id])) for r in cat.records}) + "\n")

    out = cat.root / "demo-output"
    out.mkdir(exist_ok=True)
    typer.echo("training a feed-forward network (91 → 200 → LDOS) on the training split …")
    t0 = time.perf_counter()
    model = load_model(train(demo_training_config(cat, out / "model")))
    typer.echo(f"trained in {time.perf_counter() - t0:.1f} s: {out / 'model'}\n")
    for r in cat.query(split="test"):
        reference = open_snapshot(stores[r.id])
        predicted = model.predict(reference, chunks=8)
        typer.echo(f"[{r.id}] test snapshot: its LDOS predicted from the atoms alone, beside DFT")
        typer.echo(prediction_table(predicted, reference))
        picture = plot_dos_comparison(predicted, reference, out / f"dos-predicted-{r.id}.png",
                                      title=f"{r.id}: predicted vs. DFT DOS")
        typer.echo(f"\npredicted vs. DFT DOS: {picture}")
    typer.echo(f"demo done in {time.perf_counter() - t_start:.0f} s; its stores, model and plots are in {cat.root}")
    return cat


def agreement_table(snapshots: dict[str, tuple[str | None, xr.Dataset]]) -> str:
    """One line per snapshot: pw.x's Fermi level, band energy and total free energy beside
    those from its LDOS — they agree when the LDOS energy grid is converged."""
    lines = [f"{'snapshot':<14} {'split':<10} {'E_F pw.x':>9} {'E_F LDOS':>9} {'ΔE_F':>7} {'ΔE_band':>9} {'ΔF':>9}",
             f"{'':<14} {'':<10} {'eV':>9} {'eV':>9} {'meV':>7} {'meV/atom':>9} {'meV/atom':>9}"]
    for id, (split, ds) in snapshots.items():
        obs = observables(ds)
        terms = energy_terms_from(ds, obs)
        ref, n = ds.attrs["reference"], ds.sizes["atom"]
        lines.append(f"{id:<14} {split or '-':<10} {ds.attrs['fermi_energy']:9.4f} {obs.fermi_energy:9.4f} "
                     f"{1000 * (obs.fermi_energy - ds.attrs['fermi_energy']):+7.1f} "
                     f"{1000 * (obs.band_energy - ref['band_energy']) / n:+9.2f} "
                     f"{1000 * (terms.total_energy - ref['total_energy']) / n:+9.2f}")
    return "\n".join(lines)


def prediction_table(predicted: xr.Dataset, reference: xr.Dataset) -> str:
    """Fermi level, band energy and total free energy: pw.x, the DFT LDOS, the predicted LDOS,
    and the prediction's error against the DFT LDOS (what the network is trained to match)."""
    n = reference.sizes["atom"]
    ref = reference.attrs["reference"]
    theirs, ours = observables(reference), observables(predicted)
    theirs_f = energy_terms_from(reference, theirs).total_energy
    ours_f = energy_terms_from(predicted, ours).total_energy
    rows = [
        ("Fermi level (eV)", reference.attrs["fermi_energy"], theirs.fermi_energy, ours.fermi_energy, 1.0, "meV"),
        ("band energy (eV)", ref["band_energy"], theirs.band_energy, ours.band_energy, 1.0 / n, "meV/atom"),
        ("total free energy (eV)", ref["total_energy"], theirs_f, ours_f, 1.0 / n, "meV/atom"),
    ]
    lines = [f"  {'':<24} {'pw.x':>12} {'DFT LDOS':>12} {'predicted':>12}   predicted − DFT LDOS"]
    for name, pw, dft, pred, scale, unit in rows:
        lines.append(f"  {name:<24} {pw:12.4f} {dft:12.4f} {pred:12.4f}   {1000 * (pred - dft) * scale:+8.2f} {unit}")
    errors = compare(predicted, reference)
    lines.append(f"  density: {errors.density_relative:.2%} relative L1 error; LDOS MSE {errors.ldos_mse:.3g}; "
                 f"{errors.outside_training:.1%} of grid points outside the training range")
    return "\n".join(lines)


def demo_training_config(cat: Catalog, output: Path) -> TrainingConfig:
    """The settings of examples/train-be2.yaml, on this catalog."""
    return TrainingConfig(
        output=str(output), catalog=str(cat.path), descriptor={"plugin": "bispectrum", "params": {}},
        model={"plugin": "feedforward", "params": {"layers": [200], "activation": "relu"}},
        epochs=100, batch_size=32, learning_rate=3e-4, early_stopping=20, checkpoint_every=10, seed=0,
    )
