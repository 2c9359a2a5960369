"""Training a model on catalogued snapshots: the config and what a run does.

``malaflow.train(config)`` selects training and validation snapshots from the catalog,
makes sure their descriptors are stored (computing them if not), fits the scalers with
dask, and trains with minibatches streamed from Zarr (the epochs and checkpoints:
:mod:`malaflow.training_loop`). Batches of epoch e depend only on (seed, e): a resumed
run ends with the same weights as an uninterrupted one, and ``workers: N`` data-parallel
replicas (:mod:`malaflow.data_parallel`) train to the weights of one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .trained_model import TrainedModel, package_versions
from .catalog import Catalog, default_catalog_path
from .compute import compute_descriptors
from .runtime import session_client, task_resources
from .config import load_config
from .data_parallel import SOLO, Replica, train_parallel
from .data import SCALINGS, BatchLoader, Scaler, feature_range, open_pairs
from .descriptors import get_descriptor
from .devices import torch_device
from .errors import MalaflowError, ParameterError
from .models import get_model
from .shuffled_data import shuffled_pairs
from .store import open_snapshot
from .targets import DEFAULT_TARGET, get_target
from .training_loop import TrainingRun
from .trust import shortest_distance

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "plateau", "step", "cosine")


@dataclass
class TrainingConfig:
    """Everything a training run depends on; ``malaflow train CONFIG.yaml`` reads it."""

    output: str = "models/model"
    catalog: str | None = None
    # a selection, or a list of them (their union): {split: …, dataset: …} or {ids: [...]}
    train: dict[str, Any] | list[dict[str, Any]] = field(default_factory=lambda: {"split": "train"})
    validation: dict[str, Any] | list[dict[str, Any]] = field(default_factory=lambda: {"split": "validation"})
    descriptor: dict[str, Any] = field(default_factory=lambda: {"plugin": "bispectrum", "params": {}})
    model: dict[str, Any] = field(default_factory=lambda: {"plugin": "feedforward", "params": {}})
    target: str = DEFAULT_TARGET
    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "plateau"
    schedule_factor: float = 0.5
    schedule_patience: int = 5
    early_stopping: int = 20  # epochs without validation improvement; 0 = off
    seed: int = 0
    checkpoint_every: int = 5
    input_scaling: str = "standard"
    output_scaling: str = "standard"
    shuffle_buffer: int = 200_000
    cache_mb: float = 1024.0
    device: str = "auto"
    valence: dict[str, float] | None = None
    workers: int = 1  # data-parallel replicas, one per Dask worker
    ensemble: int = 1  # members trained from seeds seed … seed + K − 1 (malaflow.ensemble)
    bootstrap: bool = False  # train on a Poisson resample of the training points drawn from the seed
    shuffled: str | None = None  # pre-shuffled training points (malaflow shuffle), read in place of the snapshots'
    # a trained model (folder) to start from: its weights and scalers (an ensemble's members start from its members)
    warm_start: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.input_scaling in SCALINGS, f"input_scaling must be one of {SCALINGS}"),
            (self.output_scaling in SCALINGS, f"output_scaling must be one of {SCALINGS}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be ≥ 1"),
            (isinstance(self.workers, int) and self.workers >= 1,
             f"workers must be a whole number ≥ 1, got {self.workers!r}"),
            (isinstance(self.ensemble, int) and self.ensemble >= 1,
             f"ensemble must be a whole number ≥ 1, got {self.ensemble!r}"),
            (isinstance(self.bootstrap, bool), f"bootstrap must be true or false, got {self.bootstrap!r}"),
            (self.ensemble == 1 or self.workers == 1,
             "ensemble members train one per worker: workers (data-parallel replicas) must be 1 with ensemble > 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(f"training config: {message}")

    @classmethod
    def load(cls, source: TrainingConfig | Mapping[str, Any] | str | Path, base: Path | None = None) -> TrainingConfig:
        """From a config object, a dict, or a YAML file (relative paths taken relative to
        the file, or to ``base`` for a mapping written in another config's file)."""
        return load_config(cls, source, "training config", paths=("output", "catalog", "shuffled", "warm_start"), base=base)


def select_ids(cat: Catalog, selection: Mapping[str, Any] | Sequence[Mapping[str, Any]], what: str) -> list[str]:
    """Snapshot ids of a selection in a config: ``{ids: [...]}`` or catalog query keys, or
    a list of such selections (their union, in order)."""
    if not isinstance(selection, Mapping):
        if not selection or not all(isinstance(s, Mapping) for s in selection):
            raise ParameterError(f"the {what} selection must be a mapping ({{split: …, dataset: …}} or "
                                 f"{{ids: […]}}) or a list of them, got {selection!r}")
        return list(dict.fromkeys(id for s in selection for id in select_ids(cat, s, what)))
    selection = dict(selection)
    if "ids" in selection:
        ids = list(selection.pop("ids"))
        for id in ids:
            cat.get(id)
    else:
        if "temperature" in selection:
            selection["temperature"] = tuple(selection["temperature"])
        ids = [r.id for r in cat.query(**selection)]
    if not ids:
        raise MalaflowError(f"the {what} selection {dict(selection)} matches no snapshot in {cat.path}")
    return ids


def _valence(cat: Catalog, ids: list[str], given: Mapping[str, float] | None) -> dict[str, float]:
    """Valence electrons per element, from the training snapshots' electron counts."""
    from ase.data import chemical_symbols

    if given:
        return {k: float(v) for k, v in given.items()}
    rows, counts, elements = [], [], None
    for id in ids:
        ds = open_snapshot(cat.store_path(id))
        numbers = ds["numbers"].values
        elements = sorted({*(elements or []), *(chemical_symbols[z] for z in numbers)})
        rows.append([chemical_symbols[z] for z in numbers])
        counts.append(ds.attrs.get("n_electrons"))
    if any(c is None for c in counts):
        raise MalaflowError("a training snapshot has no electron count; give valence: {element: electrons} in the config")
    a = np.array([[row.count(e) for e in elements] for row in rows], dtype=float)
    solution, *_ = np.linalg.lstsq(a, np.array(counts, dtype=float), rcond=None)
    if np.linalg.matrix_rank(a) < len(elements) or not np.allclose(a @ solution, counts, atol=1e-6):
        raise MalaflowError(
            f"cannot tell the valence electrons of {elements} from the training snapshots; "
            "give valence: {element: electrons} in the config"
        )
    return {e: round(float(v), 9) for e, v in zip(elements, solution)}  # 2.0, not 1.9999999999999996


def train(
    config: TrainingConfig | Mapping[str, Any] | str | Path,
    client: Any = None,
    resume: bool = True,
    max_epochs: int | None = None,
    progress: bool = True,
) -> Path:
    """Train a model; returns its directory (``config.output``).

    With ``resume`` an existing checkpoint there is continued. ``max_epochs`` bounds the
    epochs done in this call (e.g. to fit a batch job's wall time; call again to go
    on). With a Dask ``client`` (or a session default client) the run is one task on
    a worker, on a GPU worker if the cluster has one; with ``workers: N`` in the config
    it is N data-parallel replicas on N workers (a local cluster of N worker processes
    is started when there is no client); with ``ensemble: K`` the K members are K tasks.
    """
    config = TrainingConfig.load(config)
    client = client or session_client()
    if config.ensemble > 1:
        from .ensemble import train_ensemble

        return train_ensemble(config, client, resume, max_epochs, progress)
    if config.workers > 1:
        if client is not None:
            return train_parallel(config, client, resume, max_epochs, progress)
        from .runtime import cluster

        threads = max(1, (os.cpu_count() or 1) // config.workers)
        with cluster({"kind": "local", "workers": config.workers, "threads_per_worker": threads}) as local:
            return train_parallel(config, local, resume, max_epochs, progress)
    if client is None:
        return train_here(config, resume, max_epochs, progress)
    future = client.submit(train_here, config, resume, max_epochs, False, pure=False,
                           resources=task_resources(client, {"GPU": 1}))
    return future.result()


@dataclass
class Snapshots:
    """The snapshots a training config selects, and where their stores are."""

    catalog: Catalog
    train: list[str]
    validation: list[str]
    stores: dict[str, Path]


def selected_snapshots(config: TrainingConfig) -> Snapshots:
    cat = Catalog.load(config.catalog or default_catalog_path(write=True))
    train_ids = select_ids(cat, config.train, "training")
    val_ids = select_ids(cat, config.validation, "validation")
    cat.ingest(train_ids + val_ids)  # stores not written yet come from the raw files now
    return Snapshots(cat, train_ids, val_ids, {id: cat.store_path(id) for id in dict.fromkeys(train_ids + val_ids)})


def _shortest_distance(store: Path) -> float:
    ds = open_snapshot(store)
    return shortest_distance(ds["positions"].values, ds.attrs["cell"], ds.attrs.get("pbc", (True, True, True)))


def train_here(config: TrainingConfig, resume: bool, max_epochs: int | None, progress: bool,
               replica: Replica = SOLO) -> Path | None:
    """The training run itself, in this process: what :func:`train` runs (here or as a
    task), what a hyperparameter trial, already a task, runs segment by segment, and
    what each replica of a data-parallel run runs (only replica 0 returns the model)."""
    selected = selected_snapshots(config)
    cat, train_ids, val_ids, stores = selected.catalog, selected.train, selected.validation, selected.stores
    descriptor = get_descriptor(config.descriptor["plugin"], config.descriptor.get("params") or {})
    if replica.size == 1:  # a data-parallel run computed them before its replicas started
        compute_descriptors(list(stores.values()), descriptor, progress=progress)
    name, variable = descriptor.store_name(), get_target(config.target).variable
    train_pairs = (shuffled_pairs(config.shuffled, name, variable, train_ids) if config.shuffled
                   else open_pairs([stores[i] for i in train_ids], name, variable))
    val_pairs = open_pairs([stores[i] for i in val_ids], name, variable)
    warm = warm_start_model(config) if config.warm_start else None
    if warm is None:
        x_scaler = Scaler.fit(config.input_scaling, [p.flat()[0] for p in train_pairs])
        y_scaler = Scaler.fit(config.output_scaling, [p.flat()[1] for p in train_pairs])
    else:  # its weights read inputs and give outputs in its scaling: keep it
        x_scaler, y_scaler = warm.x_scaler, warm.y_scaler
    input_range = feature_range([p.flat()[0] for p in train_pairs])
    shard = {"rank": replica.rank, "replicas": replica.size}
    loader = BatchLoader(train_pairs, x_scaler, y_scaler, config.batch_size, True,
                         config.shuffle_buffer, config.cache_mb, config.seed, **shard,
                         bootstrap=config.seed if config.bootstrap else None)
    val_loader = BatchLoader(val_pairs, x_scaler, y_scaler, max(config.batch_size, 4096), False,
                             config.shuffle_buffer, config.cache_mb, config.seed, **shard)

    device = torch_device(config.device, "training config")
    torch.manual_seed(config.seed)
    model_plugin = get_model(config.model["plugin"], config.model.get("params") or {})
    n_in, n_out = train_pairs[0].inputs.shape[3], train_pairs[0].outputs.shape[3]
    network = model_plugin.build(n_in, n_out)
    if warm is not None:
        network.load_state_dict(warm.network.state_dict())
    network = network.to(device)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(config, network, device, replica, {"train": train_ids, "validation": val_ids})
    if resume:
        run.restore()
    run.fit(loader, val_loader, max_epochs, progress)
    if not replica.writes:
        return None
    run.write_history()
    state = run.state
    network.load_state_dict(state["best_state"])
    first = open_snapshot(stores[train_ids[0]])  # energy grid, temperature, DFT settings
    trained = TrainedModel(
        network.cpu(), {"plugin": model_plugin.name, "params": model_plugin.params_dict()},
        {"plugin": descriptor.name, "params": descriptor.params_dict()},
        x_scaler, y_scaler, first["energy"].values, float(first.attrs["temperature"]),
        _valence(cat, train_ids, config.valence), _grid_spacing(stores[i] for i in train_ids),
        {"training_snapshots": train_ids, "validation_snapshots": val_ids, "epochs_done": state["epoch"],
         "min_distance": min(_shortest_distance(stores[i]) for i in train_ids),
         "early_stopped": run.stopped,
         "best_validation_loss": state["best_val"], "config": dataclasses.asdict(config),
         "versions": package_versions()},
        _dft_settings(first, out), [r.tolist() for r in input_range], config.target,
    )
    return trained.save(out)


def warm_start_model(config: TrainingConfig) -> TrainedModel:
    """The model a run starts from, checked to be the network, descriptor and target this
    config trains (its weights mean nothing to another)."""
    from .trained_model import load_model

    warm = load_model(config.warm_start)
    if not isinstance(warm, TrainedModel):
        raise ParameterError(f"training config: warm_start {config.warm_start} is an ensemble; a single network "
                             "starts from one model (an ensemble's members start from its members)")
    wanted = {"descriptor": _spec(get_descriptor, config.descriptor), "model": _spec(get_model, config.model),
              "target": config.target}
    found = {"descriptor": _spec(get_descriptor, warm.descriptor), "model": _spec(get_model, warm.model),
             "target": warm.target}
    differ = [f"{k}: {found[k]} there, {wanted[k]} here" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ParameterError(f"training config: warm_start {config.warm_start} was trained otherwise "
                             f"({'; '.join(differ)}); its weights cannot start this run")
    return warm


def _spec(get: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A plugin with all its parameters (defaults filled in, as JSON has them), to compare two configs by."""
    plugin = get(spec["plugin"], spec.get("params") or {})
    return json.loads(json.dumps({"plugin": plugin.name, "params": plugin.params_dict()}))


def _dft_settings(ds, out: Path) -> dict[str, Any]:
    """Pseudopotential names and density cutoff of the training DFT, with the UPF files
    copied beside the model (when they can be found) so its predictions carry them."""
    from .observables import find_pseudopotentials

    settings = {k: ds.attrs[k] for k in ("pseudopotentials", "ecutrho") if ds.attrs.get(k) is not None}
    try:
        for pp in find_pseudopotentials(ds).values():
            shutil.copyfile(pp.path, out / pp.path.name)
    except MalaflowError as exc:
        log.warning("the model will not give total energies: %s", exc)
    return settings


def _grid_spacing(stores) -> list[float]:
    spacings = []
    for store in stores:
        ds = open_snapshot(store)
        spacings.append(np.linalg.norm(np.array(ds.attrs["cell"]), axis=1) / np.array(ds.attrs["grid_shape"]))
    return np.mean(spacings, axis=0).tolist()
