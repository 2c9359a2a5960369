"""The ``malaflow`` command line."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from .catalog import Catalog, SnapshotRecord, default_catalog_path
from .errors import MalaflowError

app = typer.Typer(
    help="malaflow: learn the electronic structure of materials (LDOS on real-space grids).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Query and extend the snapshot catalog (catalog.yaml).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
descriptors_app = typer.Typer(help="Descriptor plugins: list them, compute them into snapshot stores.", no_args_is_help=True)
app.add_typer(descriptors_app, name="descriptors")
plot_app = typer.Typer(help="Plots of a snapshot (PNG).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")

ClusterOption = typer.Option(
    None, "--cluster", help="Dask cluster config (YAML): kind local|slurm|pbs|address, see `malaflow.cluster`"
)
CatalogOption = typer.Option(
    None, "--catalog", "-c", help="catalog.yaml to use [default: $MALAFLOW_CATALOG, ./catalog.yaml, or the shipped one]"
)


@contextlib.contextmanager
def _cluster(config: Optional[Path]):
    """The cluster of ``--cluster`` for the duration of a command (none: local threads)."""
    if config is None:
        yield None
        return
    from .runtime import cluster

    with cluster(config) as client:
        typer.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def _catalog(path: Optional[Path], write: bool = False) -> Catalog:
    return Catalog.load(path or default_catalog_path(write))


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML, so numbers and lists work."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MalaflowError(f"expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _record_line(r: SnapshotRecord) -> str:
    t = f"{r.temperature:.1f} K" if r.temperature is not None else "? K"
    grid = "×".join(map(str, r.grid_shape)) if r.grid_shape else "-"
    return (
        f"{r.id:<16} {r.dataset or '-':<12} {r.code:<5} {','.join(r.elements):<8} "
        f"{r.n_atoms or '?':>5} {t:>9} {grid:>12} {r.split or '-':<10}"
    )


def _print_records(records: list[SnapshotRecord]) -> None:
    typer.echo(f"{'id':<16} {'dataset':<12} {'code':<5} {'elements':<8} {'atoms':>5} {'T':>9} {'grid':>12} split")
    for r in records:
        typer.echo(_record_line(r))
    typer.echo(f"({len(records)} snapshot{'s' if len(records) != 1 else ''})")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what malaflow does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("plugins")
def plugins_cmd(kind: Optional[str] = typer.Option(None, help="descriptors, targets, models or readers")) -> None:
    """List registered plugins: name, kind, version and source package."""
    from .plugins import list_plugins

    infos = list_plugins(kind)
    typer.echo(f"{'name':<20} {'kind':<12} {'version':<10} {'package':<24} {'entry point':<18} description")
    for p in infos:
        desc = getattr(p.cls, "description", "") or (p.cls.__doc__ or "").strip().split("\n")[0]
        typer.echo(f"{p.name:<20} {p.kind:<12} {p.version:<10} {p.package:<24} {p.entry_point:<18} {desc}")


def _store(target: str, catalog: Optional[Path]) -> Path:
    """A store path given as a path or as a catalog id."""
    path = Path(target)
    return path if path.exists() else _catalog(catalog).store_path(target)


def _open(target: str, catalog: Optional[Path]):
    """The snapshot dataset (lazy) of a store path or catalog id."""
    from .snapshot import open_snapshot

    return open_snapshot(_store(target, catalog))


SnapshotArg = typer.Argument(..., help="A snapshot store (.zarr) or a catalog id")
SchemeOption = typer.Option("analytic", help="Energy integration: analytic or quadrature")


@app.command("info")
def info_cmd(target: str = SnapshotArg, catalog: Optional[Path] = CatalogOption) -> None:
    """Summarise one snapshot store."""
    from .snapshot import load_snapshot

    from .descriptor_store import interrupted_descriptors

    path = _store(target, catalog)
    typer.echo(f"{path}:\n{load_snapshot(path).summary()}")
    for name, (done, total) in interrupted_descriptors(path).items():
        typer.echo(f"descriptors/{name}: interrupted, {done} of {total} chunks written "
                   f"({total - done} missing) — run the same `descriptors compute` again to resume")


@app.command("observables")
def observables_cmd(target: str = SnapshotArg, scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption,
                    pseudo_dir: Optional[Path] = typer.Option(None, help="Folder of the UPF files [found automatically]")) -> None:
    """Fermi level, N, band energy, −TS, energy terms and total free energy from the LDOS, beside DFT."""
    from .observables import observables_table

    typer.echo(observables_table(_open(target, catalog), scheme, pseudo_dir))


@plot_app.command("dos")
def plot_dos_cmd(target: str = SnapshotArg, output: Path = typer.Option(Path("dos.png"), "-o", "--output"),
                 scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption) -> None:
    """DOS with the Fermi level marked."""
    from .plots import plot_dos

    typer.echo(f"wrote {plot_dos(_open(target, catalog), output, scheme)}")


@plot_app.command("density")
def plot_density_cmd(target: str = SnapshotArg, output: Path = typer.Option(Path("density.png"), "-o", "--output"),
                     axis: str = typer.Option("z", help="x, y or z"), index: Optional[int] = typer.Option(None, help="Plane index [middle]"),
                     scheme: str = SchemeOption, catalog: Optional[Path] = CatalogOption) -> None:
    """A slice of the electron density at the self-consistent Fermi level."""
    from .plots import plot_density_slice

    typer.echo(f"wrote {plot_density_slice(_open(target, catalog), output, axis, index, scheme)}")


@catalog_app.command("list")
def catalog_list(catalog: Optional[Path] = CatalogOption) -> None:
    """List every snapshot in the catalog."""
    cat = _catalog(catalog)
    typer.echo(f"catalog {cat.path}")
    _print_records(cat.records)


@catalog_app.command("show")
def catalog_show(id: str, catalog: Optional[Path] = CatalogOption) -> None:
    """Print one snapshot record in full."""
    record = _catalog(catalog).get(id)
    typer.echo(yaml.safe_dump(record.to_yaml(), sort_keys=False, allow_unicode=True).rstrip())


@catalog_app.command("query")
def catalog_query(
    elements: Optional[list[str]] = typer.Option(None, "--elements", "-e", help="Contains all these elements"),
    temperature: Optional[str] = typer.Option(None, "--temperature", "-t", help="LO:HI in K"),
    code: Optional[str] = typer.Option(None, help="qe, vasp, mala, ..."),
    split: Optional[str] = typer.Option(None, help="train, validation or test"),
    dataset: Optional[str] = typer.Option(None),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Snapshots matching all the criteria given."""
    t_range = None
    if temperature:
        lo, sep, hi = temperature.partition(":")
        try:
            t_range = (float(lo) if lo else 0.0, float(hi) if hi else float("inf"))
        except ValueError:
            raise MalaflowError(f"--temperature takes LO:HI in K, got {temperature!r}") from None
        if not sep:
            t_range = (t_range[0], t_range[0])
    _print_records(_catalog(catalog).query(elements=elements, temperature=t_range, code=code, split=split, dataset=dataset))


@catalog_app.command("add")
def catalog_add(
    path: Path = typer.Argument(..., help="DFT output to read (file or folder)"),
    reader: Optional[str] = typer.Option(None, help="Reader plugin [default: the first that recognises PATH]"),
    id: Optional[str] = typer.Option(None, help="Snapshot id [default: from the file name]"),
    dataset: Optional[str] = typer.Option(None),
    split: Optional[str] = typer.Option(None, help="train, validation or test"),
    option: list[str] = typer.Option([], "--option", "-o", help="Reader option KEY=VALUE (repeatable), e.g. ldos=cubes/"),
    chunks: Optional[int] = typer.Option(None, help="Spatial chunk edge of the Zarr store [32]"),
    overwrite: bool = typer.Option(False, help="Replace a record and store with the same id"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Read PATH with a reader plugin, write its Zarr store, and record it."""
    cat_path = catalog or default_catalog_path(write=True)
    cat = Catalog.load(cat_path) if Path(cat_path).exists() else Catalog(cat_path)
    record = cat.add(path, reader=reader, id=id, dataset=dataset, split=split, chunks=chunks,
                     overwrite=overwrite, **_parse_options(option))
    typer.echo(f"added {record.id} → {record.store}")


@catalog_app.command("init")
def catalog_init(path: Path = typer.Argument(Path("catalog.yaml"), help="Where to create it")) -> None:
    """Create an empty catalog (stores go to stores/ beside it)."""
    if path.exists():
        raise MalaflowError(f"{path} exists already")
    Catalog(path).save()
    typer.echo(f"created {path}; add snapshots with `malaflow catalog add PATH -c {path}`")


@catalog_app.command("ingest")
def catalog_ingest(
    ids: Optional[list[str]] = typer.Argument(None, help="Snapshot ids [default: all]"),
    force: bool = typer.Option(False, help="Rewrite stores that exist"),
    catalog: Optional[Path] = CatalogOption,
) -> None:
    """Write the Zarr stores of catalogued snapshots from their raw files."""
    cat = _catalog(catalog, write=True)
    for store in cat.ingest(ids or None, force=force):
        typer.echo(f"wrote {store}")


@catalog_app.command("validate")
def catalog_validate(catalog: Optional[Path] = CatalogOption) -> None:
    """Check catalog.yaml and the checksums of every raw file."""
    cat = _catalog(catalog)
    for r in cat.records:
        cat.verify(r.id)
    typer.echo(f"{cat.path}: {len(cat.records)} snapshots, all raw files present and unchanged")
    for store in cat.unrecorded_stores():
        typer.echo(f"warning: {store} is in the store folder but no record names it (an interrupted add?)")


@descriptors_app.command("list")
def descriptors_list() -> None:
    """Every descriptor plugin with its parameters and their defaults."""
    from .descriptors import describe_params
    from .plugins import list_plugins

    for p in list_plugins("descriptors"):
        doc = (p.cls.__doc__ or "").strip().split("\n")[0]
        how = "blockwise (any chunk, any worker)" if getattr(p.cls, "blockwise", True) else "whole grid per task"
        typer.echo(f"{p.name}  [{p.package} {p.version}; {how}]\n  {doc}")
        for name, default, help in describe_params(p.cls):
            typer.echo(f"    {name + '=' + repr(default):<28} {help}")
        typer.echo("")


@descriptors_app.command("compute")
def descriptors_compute(
    targets: Optional[list[str]] = typer.Argument(None, help="Snapshot stores (.zarr) or catalog ids [default: every catalogued snapshot]"),
    plugin: str = typer.Option("bispectrum", "--plugin", "-p", help="Descriptor plugin (see `malaflow descriptors list`)"),
    param: list[str] = typer.Option([], "--param", help="Plugin parameter KEY=VALUE (repeatable), e.g. twojmax=8"),
    chunks: Optional[int] = typer.Option(None, help="Spatial chunk edge of the stored array [32]"),
    overwrite: bool = typer.Option(False, help="Recompute and replace stored descriptors of the same name"),
    catalog: Optional[Path] = CatalogOption,
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Compute descriptors into snapshot stores, in parallel, with a progress bar.

    An interrupted run (Ctrl-C) keeps the chunks written; the same command resumes."""
    from .compute import compute_descriptors
    from .descriptors import get_descriptor
    from .snapshot import list_descriptors

    if targets:
        paths = [_store(t, catalog) for t in targets]
    else:
        cat = _catalog(catalog, write=True)
        paths = [cat.resolve(r.store) for r in cat.records]
    descriptor = get_descriptor(plugin, _parse_options(param))
    name = descriptor.store_name()
    cached = [p for p in paths if name in list_descriptors(p)]
    with _cluster(cluster):
        arrays = compute_descriptors(paths, descriptor, chunks=chunks, overwrite=overwrite)
    for path, arr in zip(paths, arrays):
        state = "present (parameters equal)" if path in cached and not overwrite else "written"
        typer.echo(f"{path}: descriptors/{name} {tuple(arr.shape)} {state}")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML); see examples/train-be2.yaml"),
    resume: bool = typer.Option(True, help="Continue from the checkpoint in the output folder, if any"),
    max_epochs: Optional[int] = typer.Option(None, help="Stop after this many epochs in this run (resume later)"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Train a model on catalogued snapshots; prints the validation errors."""
    from .artifact import load_model
    from .evaluation import errors_table, evaluate_store
    from .training import TrainingConfig, train

    cfg = TrainingConfig.load(config)
    with _cluster(cluster):
        path = train(cfg, resume=resume, max_epochs=max_epochs)
    model = load_model(path)
    cat = Catalog.load(cfg.catalog or default_catalog_path())
    ids = model.metadata["validation_snapshots"]
    typer.echo(f"model: {path}  (history: {path / 'history.csv'})\nvalidation:")
    typer.echo(errors_table([evaluate_store(model, cat.store_path(i), i) for i in ids]))


@app.command("hpo")
def hpo_cmd(
    config: Path = typer.Argument(..., help="Study config (YAML); see examples/hpo-be2.yaml"),
    trials: Optional[int] = typer.Option(None, help="Total trials of the study [the config's]"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Hyperparameter study with Optuna: one Dask task per trial; run again to go on."""
    from .evaluation import errors_table
    from .hpo import optimize

    with _cluster(cluster):
        result = optimize(config, trials=trials)
    typer.echo(f"best trials (of {len(result.study.trials)}):\n{result.table}\n")
    typer.echo(f"best model: {result.best_model}")
    if result.test_errors:
        typer.echo(f"best model on the test snapshots:\n{errors_table(result.test_errors)}")
    for key in ("trials", "history", "importances", "report"):
        if key in result.files:
            typer.echo(f"{key}: {result.files[key]}")


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Trained model folder"),
    structure: Path = typer.Argument(..., help="Atomic structure: any file ASE reads (POSCAR, .xyz, .cif, pw.x input, ...)"),
    grid: Optional[tuple[int, int, int]] = typer.Option(None, help="Grid points NX NY NZ [the training spacing]"),
    chunks: int = typer.Option(32, help="Spatial chunk edge: bounds the memory of each task"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the predicted LDOS as a Zarr store"),
    plot: Optional[Path] = typer.Option(None, help="PNG of the predicted DOS"),
    scheme: str = SchemeOption,
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Predict the LDOS of a structure chunk by chunk and print its observables."""
    import ase.io

    from .artifact import load_model
    from .snapshot import write_snapshot
    from .trust import observables_with_trust

    try:
        atoms = ase.io.read(structure)
    except Exception as exc:
        raise MalaflowError(f"{structure}: ASE cannot read this structure ({exc})") from None
    predicted = load_model(model).predict(atoms, grid_shape=grid, chunks=chunks)
    with _cluster(cluster):
        obs, share = observables_with_trust(predicted, scheme)
        typer.echo(f"{structure}: {len(atoms)} atoms, grid {'×'.join(map(str, predicted.attrs['grid_shape']))}")
        for key, value in obs.as_dict().items():
            typer.echo(f"  {key:<22} {value}")
        typer.echo(f"  {'extrapolated':<22} {share:.1%} of the grid points (descriptors outside the training range)")
        for text in predicted.attrs["warnings"]:
            typer.echo(f"warning: {text}", err=True)
        if output:
            typer.echo(f"wrote {write_snapshot(predicted, output, chunks=chunks)}")
    if plot:
        from .plots import plot_dos

        typer.echo(f"wrote {plot_dos(predicted, plot, scheme)}")


@app.command("test")
def test_cmd(
    model: Path = typer.Argument(..., help="Trained model folder"),
    splits: list[str] = typer.Option(["test"], "--split", help="Catalog split to test on (repeatable)"),
    dataset: Optional[str] = typer.Option(None, help="Only snapshots of this dataset"),
    ids: Optional[list[str]] = typer.Option(None, "--id", help="Snapshot ids instead of a split (repeatable)"),
    plot: Optional[Path] = typer.Option(None, help="PNG of predicted vs. DFT DOS of the largest tested cell"),
    catalog: Optional[Path] = CatalogOption,
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Errors of a model on test snapshots: LDOS MSE, band energy, Fermi level, density
    (and per cell size, when the cells differ)."""
    from .artifact import load_model
    from .evaluation import errors_by_size, errors_table, evaluate_stores

    cat = _catalog(catalog)
    chosen = ids or [r.id for split in splits for r in cat.query(split=split, dataset=dataset)]
    if not chosen:
        raise MalaflowError(f"no snapshots with split {' or '.join(splits)}"
                            + (f" in dataset {dataset!r}" if dataset else "") + f" in {cat.path}")
    trained = load_model(model)
    with _cluster(cluster):
        results = evaluate_stores(trained, {id: cat.store_path(id) for id in chosen})
        errors = [e for e, _, _ in results]
        typer.echo(errors_table(errors))
        if len({e.n_atoms for e in errors}) > 1:
            typer.echo(f"\nper cell size:\n{errors_by_size(errors)}")
        if plot:
            from .plots import plot_dos_comparison

            largest, predicted, reference = max(results, key=lambda r: r[0].n_atoms)
            title = f"{largest.snapshot} ({largest.n_atoms} atoms): predicted vs. DFT DOS"
            typer.echo(f"wrote {plot_dos_comparison(predicted, reference, plot, title=title)}")


@app.command("generate")
def generate_cmd(
    config: Path = typer.Argument(..., help="Generation config (YAML); see examples/generate-be2.yaml"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Make training data with Quantum ESPRESSO: pw.x + pp.x per configuration → stores + catalog."""
    from .generate import generate

    with _cluster(cluster):
        result = generate(config)
    for state in ("done", "skipped", "failed"):
        typer.echo(f"{state}: {len(result[state])}" + (f"  ({', '.join(result[state])})" if result[state] else ""))
    if result["failed"]:
        typer.echo("failures and their reasons: 'failed:' in the catalog (scratch folders kept); run again to retry")


@app.command("demo")
def demo_cmd(catalog: Optional[Path] = CatalogOption) -> None:
    """Run the main job on the shipped Be demo data: ingest, descriptors, observables, DOS plot."""
    from .demo import run_demo

    run_demo(catalog or default_catalog_path())


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _one_line_warning  # a physicist at a shell reads sentences, not source lines
    try:
        app()
    except MalaflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
