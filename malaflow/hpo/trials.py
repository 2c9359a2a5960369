"""Running one trial: its training config, its segments, and what Optuna is told.

A trial trains in segments of ``report_every`` epochs. Each segment is one call of
:func:`run_segment` — a Dask task on a cluster — that resumes the trial's training from
its checkpoint, trains on and scores the model on the validation snapshots. The driver
reports the score to Optuna and asks the pruner whether to go on: all Optuna calls are
the driver's, through the trial ``study.ask()`` gave it (Optuna's public API only).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from ..compute import compute_descriptors
from ..descriptors import get_descriptor
from ..errors import MalaflowError
from ..training import TrainingConfig, selected_snapshots
from .space import StudyConfig

log = logging.getLogger(__name__)


def trial_dir(config: StudyConfig, number: int) -> Path:
    return Path(config.output) / "trials" / f"{number:04d}"


def sampler(study: Any, seed: int) -> Any:
    """A TPE sampler seeded by the study's seed and the index of the parameter set it
    draws next (trials less retries), not by when the driver started: a resumed or
    extended study goes on with the sequence a straight run would have drawn. TPE keeps
    no state but its random generator (it reads the finished trials from the storage)."""
    import optuna

    drawn = sum("retry_of" not in t.user_attrs for t in study.trials)
    return optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([seed, drawn]).generate_state(1)[0]))


@dataclass
class Trial:
    """A trial as the driver follows it from ``study.ask()`` to ``study.tell()``."""

    optuna_trial: Any  # optuna.Trial
    training: TrainingConfig
    resumed_from_epoch: int
    started: float = field(default_factory=time.perf_counter)
    segments: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.optuna_trial.number

    def record(self, segment: dict[str, Any]) -> bool:
        """Report a finished segment; True when the trial is over (all epochs run, early
        stopping, or pruned)."""
        self.segments += 1
        self.last = segment
        self.optuna_trial.report(segment["value"], segment["epochs"])
        return self.finished or self.optuna_trial.should_prune()

    @property
    def finished(self) -> bool:
        return bool(self.last) and (self.last["epochs"] >= self.training.epochs or self.last["stopped"])

    def tell(self, study: Any, failure: BaseException | None = None) -> bool:
        """Record how the trial ended; False if it failed."""
        import optuna

        if failure is not None:
            log.warning("trial %d failed: %s", self.number, failure)
            self.optuna_trial.set_user_attr("error", str(failure))
            study.tell(self.optuna_trial, state=optuna.trial.TrialState.FAIL)
            return False
        attrs = {"epochs": self.last["epochs"], "resumed_from_epoch": self.resumed_from_epoch,
                 "seconds": time.perf_counter() - self.started, "model": self.training.output}
        for key, value in attrs.items():
            self.optuna_trial.set_user_attr(key, value)
        if self.finished:
            study.tell(self.optuna_trial, self.last["value"])
        else:
            study.tell(self.optuna_trial, state=optuna.trial.TrialState.PRUNED)
        return True


def ask(study: Any, config: StudyConfig, client: Any) -> Trial:
    """Start a trial: draw its parameters; if it retries an interrupted one, report the
    scores that one reached and hand it that one's folder (so training resumes from its
    checkpoint); compute its descriptors (distributed, cached in the stores) beforehand so
    that concurrent trials never write the same store."""
    study.sampler = sampler(study, config.seed)
    trial = study.ask()
    training = config.trial_config(trial, trial_dir(config, trial.number))
    if "retry_of" in trial.user_attrs:
        old = study.trials[trial.user_attrs["retry_of"]]
        for step, value in sorted(old.intermediate_values.items()):
            trial.report(value, step)
        source = trial_dir(config, old.number)
        if source.is_dir() and not Path(training.output).exists():
            source.rename(training.output)
    descriptor = get_descriptor(training.descriptor["plugin"], training.descriptor.get("params") or {})
    compute_descriptors(list(selected_snapshots(training).stores.values()), descriptor, client=client, progress=False)
    checkpoint = Path(training.output) / "model.json"
    resumed = json.loads(checkpoint.read_text())["metadata"]["epochs_done"] if checkpoint.is_file() else 0
    return Trial(trial, training, resumed)


def score(model: Any, stores: list[Path], objective: str) -> float:
    """The objective of a trained model on stored snapshots: mean |ΔE_band| (meV/atom)
    or mean LDOS MSE."""
    from ..evaluation import evaluate_stores

    errors = [e for e, *_ in evaluate_stores(model, {str(s): s for s in stores})]
    if objective == "band_energy":
        return sum(abs(e.band_energy_mev_per_atom) for e in errors) / len(errors)
    return sum(e.ldos_mse for e in errors) / len(errors)


def run_segment(training: TrainingConfig, epochs: int, objective: str) -> dict[str, Any]:
    """One segment of a trial (a Dask task): train up to ``epochs`` more epochs from the
    checkpoint, then score. Its dask work runs on this worker's threads — submitting to
    the cluster from inside a task could wait on workers the trials themselves occupy."""
    from ..trained_model import load_model

    model_dir = _train_segment(training, epochs)
    with dask.config.set(scheduler="threads"):
        model = load_model(model_dir)
        snapshots = selected_snapshots(training)
        value = score(model, [snapshots.stores[i] for i in snapshots.validation], objective)
    done = model.metadata["epochs_done"]
    if not math.isfinite(value):
        raise MalaflowError(f"{training.output}: the objective is {value} after epoch {done}")
    return {"value": value, "epochs": done, "stopped": bool(model.metadata["early_stopped"])}


def _train_segment(training: TrainingConfig, epochs: int) -> Path:
    """Up to ``epochs`` more epochs of a trial: in this task, or with ``workers: N`` in
    the trial's training section as N replicas on the cluster this task runs on (the
    task leaves its worker's thread pool while they train, so they may use it)."""
    from ..data_parallel import train_parallel
    from ..training import train, train_here

    if training.workers == 1:
        with dask.config.set(scheduler="threads"):
            return train_here(training, resume=True, max_epochs=epochs, progress=False)
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):  # not a task: the driver runs trials one by one
        return train(training, resume=True, max_epochs=epochs, progress=False)
    with worker_client() as client:
        return train_parallel(training, client, resume=True, max_epochs=epochs, progress=False)
