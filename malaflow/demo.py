"""`malaflow demo`: the main job, end to end, on the Be data shipped in the repo.

It grows as the pipeline does; today: ingest the catalogued raw files into Zarr
stores, compute the SNAP bispectrum descriptors of every snapshot with LAMMPS into
its store (snapshots in parallel), summarise each snapshot, compute its observables
from the LDOS beside the DFT reference, and plot the DOS of the test snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from tqdm import tqdm

from .catalog import Catalog
from .compute import compute_descriptors
from .observables import observables_table
from .plots import plot_dos
from .snapshot import list_descriptors, load_snapshot, open_snapshot


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
    for r in cat.query(split="test"):
        typer.echo(f"DOS plot of {r.id}: {plot_dos(open_snapshot(cat.resolve(r.store)), out / f'dos-{r.id}.png')}")
    return cat
