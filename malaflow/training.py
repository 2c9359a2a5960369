"""Training a model on catalogued snapshots: config, loop, checkpoints, resume.

``malaflow.train(config)`` selects training and validation snapshots from the catalog,
makes sure their descriptors are stored (computing them if not), fits the scalers with
dask, and trains with minibatches streamed from Zarr. A checkpoint every N epochs holds
everything the next epoch depends on (weights, optimizer, schedule, early-stopping
state, RNG), and batches of epoch e depend only on (seed, e): a resumed run ends with
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .trained_model import TrainedModel, package_versions
from .catalog import Catalog, default_catalog_path
from .compute import compute_descriptors
from .runtime import session_client, task_resources
from .config import load_config
from .data import SCALINGS, BatchLoader, Scaler, feature_range, open_pairs
from .descriptors import get_descriptor
from .devices import torch_device
from .errors import MalaflowError, ParameterError
from .models import get_model
from .store import open_snapshot
from .targets import DEFAULT_TARGET, get_target
from .trust import shortest_distance

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "plateau", "step", "cosine")


@dataclass
class TrainingConfig:
    """Everything a training run depends on; ``malaflow train CONFIG.yaml`` reads it."""

    output: str = "models/model"
    catalog: str | None = None
    train: dict[str, Any] = field(default_factory=lambda: {"split": "train"})
    validation: dict[str, Any] = field(default_factory=lambda: {"split": "validation"})
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
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(f"training config: {message}")

    @classmethod
    def load(cls, source: TrainingConfig | Mapping[str, Any] | str | Path, base: Path | None = None) -> TrainingConfig:
        """From a config object, a dict, or a YAML file (relative paths taken relative to
        the file, or to ``base`` for a mapping written in another config's file)."""
        return load_config(cls, source, "training config", paths=("output", "catalog"), base=base)


def select_ids(cat: Catalog, selection: Mapping[str, Any], what: str) -> list[str]:
    """Snapshot ids of a selection in a config: ``{ids: [...]}`` or catalog query keys."""
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
    a worker, on a GPU worker if the cluster has one.
    """
    config = TrainingConfig.load(config)
    client = client or session_client()
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
    return Snapshots(cat, train_ids, val_ids, {id: cat.store_path(id) for id in dict.fromkeys(train_ids + val_ids)})


def _shortest_distance(store: Path) -> float:
    ds = open_snapshot(store)
    return shortest_distance(ds["positions"].values, ds.attrs["cell"], ds.attrs.get("pbc", (True, True, True)))


def train_here(config: TrainingConfig, resume: bool, max_epochs: int | None, progress: bool) -> Path:
    """The training run itself, in this process: what :func:`train` runs (here or as a
    task) and what a hyperparameter trial, already a task, runs segment by segment."""
    selected = selected_snapshots(config)
    cat, train_ids, val_ids, stores = selected.catalog, selected.train, selected.validation, selected.stores
    descriptor = get_descriptor(config.descriptor["plugin"], config.descriptor.get("params") or {})
    compute_descriptors(list(stores.values()), descriptor, progress=progress)
    name, variable = descriptor.store_name(), get_target(config.target).variable
    train_pairs = open_pairs([stores[i] for i in train_ids], name, variable)
    val_pairs = open_pairs([stores[i] for i in val_ids], name, variable)
    x_scaler = Scaler.fit(config.input_scaling, [p.flat()[0] for p in train_pairs])
    input_range = feature_range([p.flat()[0] for p in train_pairs])
    y_scaler = Scaler.fit(config.output_scaling, [p.flat()[1] for p in train_pairs])
    loader = BatchLoader(train_pairs, x_scaler, y_scaler, config.batch_size, True,
                         config.shuffle_buffer, config.cache_mb, config.seed)
    val_loader = BatchLoader(val_pairs, x_scaler, y_scaler, max(config.batch_size, 4096), False,
                             config.shuffle_buffer, config.cache_mb, config.seed)

    device = torch_device(config.device, "training config")
    torch.manual_seed(config.seed)
    model_plugin = get_model(config.model["plugin"], config.model.get("params") or {})
    n_in, n_out = train_pairs[0].inputs.shape[3], train_pairs[0].outputs.shape[3]
    network = model_plugin.build(n_in, n_out).to(device)
    optimizer = (torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD)(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = {
        "none": lambda: None,
        "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.schedule_factor, patience=config.schedule_patience),
        "step": lambda: torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.schedule_patience, gamma=config.schedule_factor),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs),
    }[config.schedule]()

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_file = out / "checkpoint.pt"
    state = {"epoch": 0, "history": [], "best_val": float("inf"), "best_state": None, "bad_epochs": 0}
    if resume and checkpoint_file.is_file():
        saved = torch.load(checkpoint_file, map_location=device, weights_only=False)
        if _settings(saved["config"]) != _settings(dataclasses.asdict(config)):
            raise MalaflowError(f"{checkpoint_file} belongs to a different configuration; remove it or use another output")
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log.info("resuming %s after epoch %d", out, state["epoch"])

    loss_fn = torch.nn.MSELoss()
    last = config.epochs if max_epochs is None else min(config.epochs, state["epoch"] + max_epochs)
    bar = tqdm(range(state["epoch"] + 1, last + 1), desc=f"training {out.name}", unit="epoch",
               initial=state["epoch"], total=config.epochs, disable=not progress)
    stopped = state["bad_epochs"] >= config.early_stopping > 0
    for epoch in bar:
        if stopped:
            break
        t0 = time.perf_counter()
        network.train()
        total, count = 0.0, 0
        for xb, yb in loader.epoch(epoch):
            xb, yb = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
            optimizer.zero_grad()
            loss = loss_fn(network(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
            count += len(xb)
        train_loss = total / count
        val_loss = _evaluate_loss(network, val_loader, device)
        if scheduler is not None:
            scheduler.step(val_loss) if config.schedule == "plateau" else scheduler.step()
        lr = optimizer.param_groups[0]["lr"]
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "validation_loss": val_loss,
                                 "learning_rate": lr, "seconds": time.perf_counter() - t0})
        if val_loss < state["best_val"]:
            state["best_val"], state["bad_epochs"] = val_loss, 0
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val_loss:.3e}", lr=f"{lr:.1e}")
        stopped = state["bad_epochs"] >= config.early_stopping > 0
        if epoch % config.checkpoint_every == 0 or epoch == last or stopped:
            _checkpoint(checkpoint_file, config, network, optimizer, scheduler, state)
    bar.close()
    _write_history(out, state["history"])
    if state["epoch"] < config.epochs and not stopped:
        log.info("%s: stopped after epoch %d of %d; train again to resume", out, state["epoch"], config.epochs)
    network.load_state_dict(state["best_state"])
    first = open_snapshot(stores[train_ids[0]])  # energy grid, temperature, DFT settings
    trained = TrainedModel(
        network.cpu(), {"plugin": model_plugin.name, "params": model_plugin.params_dict()},
        {"plugin": descriptor.name, "params": descriptor.params_dict()},
        x_scaler, y_scaler, first["energy"].values, float(first.attrs["temperature"]),
        _valence(cat, train_ids, config.valence), _grid_spacing(stores[i] for i in train_ids),
        {"training_snapshots": train_ids, "validation_snapshots": val_ids, "epochs_done": state["epoch"],
         "min_distance": min(_shortest_distance(stores[i]) for i in train_ids),
         "early_stopped": stopped,
         "best_validation_loss": state["best_val"], "config": dataclasses.asdict(config),
         "versions": package_versions()},
        _dft_settings(first, out), [r.tolist() for r in input_range], config.target,
    )
    return trained.save(out)


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


def _evaluate_loss(network: torch.nn.Module, loader: BatchLoader, device: torch.device) -> float:
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for xb, yb in loader.epoch(0):
            pred = network(torch.from_numpy(xb).to(device))
            total += float(torch.nn.functional.mse_loss(pred, torch.from_numpy(yb).to(device), reduction="sum")) / yb.shape[1]
            count += len(xb)
    return total / count


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued: all but where it lives (a
    training folder may be moved, e.g. from an interrupted study trial to its retry)."""
    return {k: v for k, v in config.items() if k != "output"}


def _checkpoint(path: Path, config, network, optimizer, scheduler, state) -> None:
    tmp = path.with_name(".checkpoint.pt.tmp")
    torch.save({
        "config": dataclasses.asdict(config), "network": network.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
        "state": state,
    }, tmp)
    os.replace(tmp, path)


def _write_history(out: Path, history: list[dict[str, float]]) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=1))
    with open(out / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "train_loss", "validation_loss", "learning_rate", "seconds"])
        writer.writeheader()
        writer.writerows(history)
