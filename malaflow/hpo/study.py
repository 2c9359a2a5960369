"""The Optuna study of a config (created or resumed from its storage) and the driver
that asks for trials, runs them (here, or as Dask tasks ``parallel`` at a time) and
tells Optuna how they ended."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import MalaflowError
from ..runtime import session_client, task_resources
from .report import StudyResult, report
from .space import StudyConfig
from .trials import Trial, ask, run_segment

log = logging.getLogger(__name__)

_MAX_FAILURES = 3  # consecutive failed trials that stop a study: the config is likely wrong


def _storage(url: str) -> Any:

    if "://" in url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(url))


def _pruner(config: StudyConfig) -> Any:
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials)
    if config.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(config: StudyConfig) -> Any:
    """Create the study or load it, retrying trials a killed run left RUNNING.

    One driver per study: a trial still RUNNING in the storage when a driver starts was
    interrupted. It is marked failed and enqueued again with the same parameters; the
    retry takes over its training folder and so resumes from its last checkpoint.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(config.output).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=config.name, storage=_storage(config.storage_url), load_if_exists=True,
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed), pruner=_pruner(config),
    )
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was interrupted at step %s; retrying it", trial.number, trial.last_step)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    return study


def _counted(study: Any) -> int:
    """Trials that count toward the budget: finished ones, less those interrupted (their
    retry counts instead)."""
    import optuna

    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                        optuna.trial.TrialState.FAIL))
    retried = {t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs}
    return sum(t.number not in retried for t in finished)


def optimize(
    config: StudyConfig | Mapping[str, Any] | str | Path,
    client: Any = None,
    trials: int | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run (or go on with) a hyperparameter study; returns its best model and report.

    ``trials`` overrides the study's trial budget. With a Dask ``client`` (or a session
    default client) each segment of a trial is one task — on a GPU worker when the
    cluster offers one — and ``config.parallel`` trials run at once; without, trials run
    here, one after the other.
    """
    config = StudyConfig.load(config)
    if trials is not None:
        config.trials = trials
    client = client or session_client()
    study = open_study(config)
    todo = max(0, config.trials - _counted(study))
    bar = tqdm(total=config.trials, initial=config.trials - todo, desc=f"study {config.name}",
               unit="trial", disable=not progress)
    failures = 0

    def told(trial: Trial, failure: BaseException | None = None) -> None:
        nonlocal failures
        failures = 0 if trial.tell(study, failure) else failures + 1
        if failures >= _MAX_FAILURES:
            raise MalaflowError(f"{failures} trials in a row failed; the last: {failure}")
        bar.update()
        if any(t.state.name == "COMPLETE" for t in study.trials):
            bar.set_postfix(best=f"{study.best_value:.4g}")

    try:
        if client is None:
            for _ in range(todo):
                trial = ask(study, config, None)
                try:
                    while not trial.record(run_segment(trial.training, config.report_every, config.objective)):
                        pass
                except Exception as exc:  # recorded as a failed trial; the study goes on
                    told(trial, exc)
                else:
                    told(trial)
        else:
            _run_on_cluster(study, config, client, todo, told)
    finally:
        bar.close()
    return report(study, config)


def _run_on_cluster(study: Any, config: StudyConfig, client: Any, todo: int, told: Any) -> None:
    """Keep ``config.parallel`` trials going, one segment task each at a time."""
    from distributed import wait

    resources = task_resources(client, {"GPU": 1})
    running: dict[Any, Trial] = {}

    def submit(trial: Trial) -> None:
        future = client.submit(run_segment, trial.training, config.report_every, config.objective, pure=False,
                               resources=resources, key=f"trial-{config.name}-{trial.number}-{trial.segments}")
        running[future] = trial

    started = 0
    try:
        while started < todo or running:
            while started < todo and len(running) < config.parallel:
                submit(ask(study, config, client))
                started += 1
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for future in done:
                trial = running.pop(future)
                try:
                    over = trial.record(future.result())
                except Exception as exc:  # recorded as a failed trial; the study goes on
                    told(trial, exc)
                    continue
                if over:
                    told(trial)
                else:
                    submit(trial)
    finally:
        client.cancel(list(running))
