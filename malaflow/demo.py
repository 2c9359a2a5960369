"""`malaflow demo`: the main job, end to end, on the Be data shipped in the repo.

It grows as the pipeline does; today: ingest the catalogued raw files into Zarr
stores, list the catalog, and summarise each snapshot from its store.
"""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from .catalog import Catalog
from .snapshot import load_snapshot


def run_demo(catalog_path: str | Path) -> Catalog:
    cat = Catalog.load(catalog_path)
    typer.echo(f"malaflow demo — catalog {cat.path}\n")
    missing = [r.id for r in cat.records if not cat.resolve(r.store).exists()]
    for id in tqdm(missing, desc="ingest raw files → Zarr", unit="snapshot", disable=not missing):
        cat.ingest([id])
    typer.echo(f"{len(missing)} store(s) written, {len(cat.records) - len(missing)} already present\n")
    for r in cat.records:
        typer.echo(f"[{r.id}] split={r.split or '-'}  store={r.store}")
        typer.echo("  " + load_snapshot(cat.resolve(r.store)).summary().replace("\n", "\n  ") + "\n")
    return cat
