"""Commands that learn and use models: train, hpo, predict, test; generate DFT data; the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    CatalogOption, ClusterOption, SchemeOption, catalog_at, on_cluster, app,
)
from ..catalog import Catalog, default_catalog_path
from ..errors import MalaflowError


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML); see examples/train-be2.yaml"),
    resume: bool = typer.Option(True, help="Continue from the checkpoint in the output folder, if any"),
    max_epochs: Optional[int] = typer.Option(None, help="Stop after this many epochs in this run (resume later)"),
    cluster: Optional[Path] = ClusterOption,
    workers: Optional[int] = typer.Option(
        None, help="Data-parallel replicas, one per Dask worker (a local cluster without --cluster) [the config's]"),
    epochs: Optional[int] = typer.Option(
        None, help="Epochs in all [the config's]; more than a finished run did continues it"),
) -> None:
    """Train a model on catalogued snapshots; prints the validation errors."""
    import dataclasses

    from ..trained_model import load_model
    from ..evaluation import errors_table, evaluate_stores
    from ..training import TrainingConfig, train

    cfg = TrainingConfig.load(config)
    overrides = {k: v for k, v in (("workers", workers), ("epochs", epochs)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    try:
        with on_cluster(cluster):
            path = train(cfg, resume=resume, max_epochs=max_epochs)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {_resume_point(Path(cfg.output))}", err=True)
        raise typer.Exit(130) from None
    model = load_model(path)
    cat = Catalog.load(cfg.catalog or default_catalog_path())
    ids = model.metadata["validation_snapshots"]
    typer.echo(f"model: {path}  (history: {path / 'history.csv'})\nvalidation:")
    typer.echo(errors_table([e for e, *_ in evaluate_stores(model, {i: cat.store_path(i) for i in ids})]))


def _resume_point(output: Path) -> str:
    """Where an interrupted training run goes on from."""
    import torch

    checkpoint = output / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"no checkpoint written yet in {output}; training again starts from the beginning"
    epoch = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["epoch"]
    return f"the checkpoint of epoch {epoch} is in {checkpoint}; train again to resume from it (the same weights)"


@app.command("shuffle")
def shuffle_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML) whose training points to shuffle"),
    output: Path = typer.Option(..., "-o", "--output", help="Zarr folder to write; then shuffled: OUTPUT in the config"),
    memory_mb: float = typer.Option(512.0, help="Memory for one bucket of the external shuffle (MB)"),
) -> None:
    """Shuffle a training set across its snapshots into one Zarr group (MALA's DataShuffler)."""
    from ..shuffled_data import shuffle_training_data

    path = shuffle_training_data(config, output, memory_mb)
    typer.echo(f"wrote {path}; train on it with  shuffled: {path}  in the training config")


@app.command("hpo")
def hpo_cmd(
    config: Path = typer.Argument(..., help="Study config (YAML); see examples/hpo-be2.yaml"),
    trials: Optional[int] = typer.Option(None, help="Total trials of the study [the config's]"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Hyperparameter study with Optuna: trials as Dask tasks; run again to go on."""
    from ..evaluation import errors_table
    from ..hpo import optimize

    with on_cluster(cluster):
        result = optimize(config, trials=trials)
    typer.echo(f"best trials (of {len(result.study.trials)}):\n{result.table}\n")
    typer.echo(f"best model: {result.best_model}")
    if result.test_errors:
        typer.echo(f"best model on the test snapshots:\n{errors_table(result.test_errors)}")
    for key in ("trials", "history", "importances", "report"):
        if key in result.files:
            typer.echo(f"{key}: {result.files[key]}")


@app.command("learn")
def learn_cmd(
    config: Path = typer.Argument(..., help="Learning config (YAML); see examples/learn-be2.yaml"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Active learning: train an ensemble, send the candidates it is least sure of to DFT,
    retrain; round by round until σ is small or the DFT budget is spent. Run again to go on."""
    from ..active_learning import PLOT_FILE, ROUNDS_FILE, LearnConfig, learn, rounds_table

    settings = LearnConfig.load(config)
    with on_cluster(cluster):
        records = learn(settings)
    typer.echo(rounds_table(records))
    out = Path(settings.output)
    typer.echo(f"stopped: {records[-1]['stopped']}\nrounds: {out / ROUNDS_FILE}\nplot: {out / PLOT_FILE}")


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
    device: str = typer.Option("auto", help="Network device: auto (a worker's GPU if it has one), cpu, cuda[:N]"),
    implementation: Optional[str] = typer.Option(
        None, help="Descriptor plugin to compute the model's features with [the fastest on each worker]"),
    sigma_fields: bool = typer.Option(
        False, "--sigma-fields", help="Ensembles: store the calibrated σ of the LDOS and the density per grid "
                                      "point beside the prediction (needs -o)"),
) -> None:
    """Predict the LDOS of a structure chunk by chunk and print its observables (and, for an
    ensemble, their calibrated σ; the plot then shows the DOS with its ±σ band)."""
    import ase.io

    from ..trained_model import load_model
    from ..store import write_snapshot
    from ..ensemble import member_dos
    from ..observables import target_of
    from ..trust import observables_with_trust

    try:
        atoms = ase.io.read(structure)
    except Exception as exc:
        raise MalaflowError(f"{structure}: ASE cannot read this structure ({exc})") from None
    with on_cluster(cluster):
        predicted = load_model(model).predict(atoms, grid_shape=grid, chunks=chunks, device=device,
                                              implementation=implementation)
        ensemble = "ldos_members" in predicted
        if sigma_fields and not (ensemble and output):
            raise MalaflowError("--sigma-fields needs an ensemble model (training config: ensemble: K) and -o STORE")
        wanted = {"dos": target_of(predicted).dos(predicted)} if plot else {}  # all in the observables' pass
        if ensemble:
            wanted["members"] = member_dos(predicted)
        obs, share, computed = observables_with_trust(predicted, scheme, also=wanted)
        typer.echo(f"{structure}: {len(atoms)} atoms, grid {'×'.join(map(str, predicted.attrs['grid_shape']))}")
        for key, value in obs.as_dict().items():
            typer.echo(f"  {key:<22} {value}")
        extra = None
        if ensemble:  # the members' spread, calibrated
            from ..ensemble import sigma_fields as fields_of, spread

            result = spread(predicted, scheme, dos=computed["members"].values)
            sigma = {f"{name}_sigma": value["std"] for name, value in result.items()}
            predicted.attrs["uncertainty"] = sigma
            for key, value in sigma.items():
                typer.echo(f"  {key:<22} {value}")
            if sigma_fields:
                extra = fields_of(predicted, result["fermi_energy"]["members"], scheme)
        typer.echo(f"  {'extrapolated':<22} {share:.1%} of the grid points (descriptors outside the training range)")
        for text in predicted.attrs["warnings"]:
            typer.echo(f"warning: {text}", err=True)
        if output:
            typer.echo(f"wrote {write_snapshot(predicted, output, chunks=chunks, extra=extra)}")
    if plot:
        from ..plots import plot_dos

        drawn = plot_dos(predicted, plot, scheme, dos=computed["dos"], obs=obs, members=computed.get("members"))
        typer.echo(f"wrote {drawn}")


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
    from ..trained_model import load_model
    from ..evaluation import errors_by_size, errors_table, evaluate_stores

    cat = catalog_at(catalog)
    chosen = ids or [r.id for split in splits for r in cat.query(split=split, dataset=dataset)]
    if not chosen:
        raise MalaflowError(f"no snapshots with split {' or '.join(splits)}"
                            + (f" in dataset {dataset!r}" if dataset else "") + f" in {cat.path}")
    trained = load_model(model)
    cat.ingest(chosen)  # stores not written yet come from the raw files now
    with on_cluster(cluster):
        results = evaluate_stores(trained, {id: cat.store_path(id) for id in chosen})
        errors = [e for e, _, _ in results]
        typer.echo(errors_table(errors))
        if len({e.n_atoms for e in errors}) > 1:
            typer.echo(f"\nper cell size:\n{errors_by_size(errors)}")
        if plot:
            from ..plots import plot_dos_comparison

            largest, predicted, reference = max(results, key=lambda r: r[0].n_atoms)
            title = f"{largest.snapshot} ({largest.n_atoms} atoms): predicted vs. DFT DOS"
            typer.echo(f"wrote {plot_dos_comparison(predicted, reference, plot, title=title)}")


@app.command("generate")
def generate_cmd(
    config: Path = typer.Argument(..., help="Generation config (YAML); see examples/generate-be2.yaml"),
    cluster: Optional[Path] = ClusterOption,
) -> None:
    """Make training data with Quantum ESPRESSO: pw.x + pp.x per configuration → stores + catalog."""
    from ..generate import generate

    with on_cluster(cluster):
        result = generate(config)
    for state in ("done", "skipped", "failed"):
        typer.echo(f"{state}: {len(result[state])}" + (f"  ({', '.join(result[state])})" if result[state] else ""))
    if result["failed"]:
        typer.echo("failures and their reasons: 'failed:' in the catalog (scratch folders kept); run again to retry")
        raise typer.Exit(1)


@app.command("demo")
def demo_cmd(
    folder: Path = typer.Argument(Path("malaflow-demo"), help="Where its stores, model and plots go"),
) -> None:
    """Run the main job on the shipped Be data: stores, descriptors, DFT vs. LDOS, training, a prediction."""
    from ..demo import run_demo

    run_demo(folder)
