"""What the commands share: the Typer apps, common options, catalog and cluster helpers."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from ..catalog import Catalog, SnapshotRecord, default_catalog_path
from ..errors import MalaflowError

app = typer.Typer(
    help="malaflow: learn the electronic structure of materials (LDOS on real-space grids).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without "<bool>", every "[default: …]" shown
)
catalog_app = typer.Typer(help="Query and extend the snapshot catalog (catalog.yaml).", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(catalog_app, name="catalog")
descriptors_app = typer.Typer(help="Descriptor plugins: list them, compute them into snapshot stores.",
                              no_args_is_help=True, rich_markup_mode=None)
app.add_typer(descriptors_app, name="descriptors")
plot_app = typer.Typer(help="Plots of a snapshot (PNG).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(plot_app, name="plot")

ClusterOption = typer.Option(
    None, "--cluster", help="Dask cluster config (YAML): kind local|local-cuda|slurm|pbs|address, see `malaflow.cluster`"
)
CatalogOption = typer.Option(
    None, "--catalog", "-c", help="catalog.yaml to use (default: $MALAFLOW_CATALOG, else ./catalog.yaml, else the repository's in a source checkout)"
)


@contextlib.contextmanager
def on_cluster(config: Optional[Path]):
    """The cluster of ``--cluster`` for the duration of a command (none: local threads)."""
    if config is None:
        yield None
        return
    from ..runtime import cluster

    import distributed  # noqa: F401  (its import sets its loggers to INFO: quiet them unless -v)

    if logging.getLogger().level > logging.INFO:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with cluster(config, announce=False) as client:
        typer.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def catalog_at(path: Optional[Path], write: bool = False) -> Catalog:
    return Catalog.load(path or default_catalog_path(write))


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML, so numbers and lists work."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MalaflowError(f"expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def record_line(r: SnapshotRecord) -> str:
    t = f"{r.temperature:.1f} K" if r.temperature is not None else "? K"
    grid = "×".join(map(str, r.grid_shape)) if r.grid_shape else "-"
    return (
        f"{r.id:<16} {r.dataset or '-':<12} {r.code:<5} {','.join(r.elements):<8} "
        f"{r.n_atoms or '?':>5} {t:>9} {grid:>12} {r.split or '-':<10}"
    )


def print_records(records: list[SnapshotRecord]) -> None:
    typer.echo(f"{'id':<16} {'dataset':<12} {'code':<5} {'elements':<8} {'atoms':>5} {'T':>9} {'grid':>12} split")
    for r in records:
        typer.echo(record_line(r))
    typer.echo(f"({len(records)} snapshot{'s' if len(records) != 1 else ''})")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what malaflow does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def store_of(target: str, catalog: Optional[Path]) -> Path:
    """A store path given as a path or as a catalog id; a bare name the catalog knows is
    its id even when a folder of that name happens to be here."""
    path = Path(target)
    if len(path.parts) == 1 and path.suffix != ".zarr":
        try:
            cat = catalog_at(catalog)
        except MalaflowError:  # no catalog here: the name can only be a path
            cat = None
        if cat is not None and any(r.id == target for r in cat.records):
            return cat.store_path(target)
    return path if path.exists() else catalog_at(catalog).store_path(target)


def open_store(target: str, catalog: Optional[Path]):
    """The snapshot dataset (lazy) of a store path or catalog id."""
    from ..store import open_snapshot

    return open_snapshot(store_of(target, catalog))


SnapshotArg = typer.Argument(..., help="A snapshot store (.zarr) or a catalog id")
SchemeOption = typer.Option("analytic", help="Energy integration: analytic or quadrature")
