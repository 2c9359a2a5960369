"""Hyperparameter optimization with Optuna, one Dask task per trial.

A study is a search space over a base training config (any key of it; model and
descriptor parameters by dotted keys such as ``model.params.layers``), an objective
measured on the validation snapshots (band-energy error in meV/atom, or the LDOS mean
squared error), and a persistent Optuna storage in the study folder. A study stopped at
any point — even killed in the middle of a trial — goes on where it was when run again:
the interrupted trial is retried with the same parameters and continues from its
training checkpoint.

Trials train in segments of ``report_every`` epochs; after each segment the model is
scored on the validation snapshots and the score reported, so that the pruner (median
or successive halving) can stop a trial doing worse than the others did at that epoch.
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import html
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
from tqdm.auto import tqdm

from .catalog import Catalog, default_catalog_path
from .compute import compute_descriptors
from .runtime import session_client, task_resources
from .descriptors import get_descriptor
from .errors import MalaflowError, ParameterError
from .params import check_keys
from .models import get_model
from .readers import read_yaml
from .snapshot import atomic_directory
from .training import TrainingConfig, select_ids, selected_snapshots

log = logging.getLogger(__name__)

OBJECTIVES = {"band_energy": "|ΔE_band| (meV/atom)", "ldos_loss": "LDOS MSE (1/(eV·Å³))²"}
PRUNERS = ("median", "successive_halving", "none")
_PRIMITIVES = (str, int, float, bool, type(None))
_MAX_FAILURES = 3  # consecutive failed trials that stop a study: the config is likely wrong


@dataclass(frozen=True)
class Dimension:
    """One search-space entry: a dotted key of the training config and how to draw it.

    Specs: ``{low, high}`` (+ ``log``, ``step``) — an int if both bounds are ints, else a
    float; ``{choices: [...]}``; ``{n_layers: [lo, hi], width: [lo, hi]}`` (+ ``log``) —
    a list of layer widths, one parameter per layer.
    """

    key: str
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        """The Optuna parameter name: the key without ``.params``, e.g. ``model.layers``."""
        return self.key.replace(".params.", ".")

    @classmethod
    def parse(cls, key: str, spec: Any) -> Dimension:
        where = f"search: {key}"
        root, *rest = key.split(".")
        fields = {f.name for f in dataclasses.fields(TrainingConfig)}
        if root not in fields or root in ("output", "catalog"):
            raise ParameterError(f"{where}: {root!r} is not a training config key you can search; "
                                 f"known: {sorted(fields - {'output', 'catalog'})}")
        plugin_key = rest == ["plugin"] or (len(rest) == 2 and rest[0] == "params")
        if root in ("model", "descriptor") and not plugin_key:
            raise ParameterError(f"{where}: write {root}.plugin or {root}.params.<name>")
        if not isinstance(spec, Mapping):
            raise ParameterError(f"{where}: expected a mapping like {{low: 1e-4, high: 1e-2, log: true}}, "
                                 f"{{choices: [...]}} or {{n_layers: [1, 3], width: [16, 512]}}, got {spec!r}")
        kinds = [k for k in ("choices", "low", "n_layers") if k in spec]
        allowed = {"choices": {"choices"}, "low": {"low", "high", "log", "step"},
                   "n_layers": {"n_layers", "width", "log"}}
        if len(kinds) != 1 or set(spec) - allowed[kinds[0]]:
            raise ParameterError(f"{where}: cannot read {dict(spec)}; give exactly one of choices, low/high "
                                 "(+ log, step), n_layers/width (+ log)")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or not all(isinstance(c, _PRIMITIVES) for c in choices):
                raise ParameterError(f"{where}: choices must be a non-empty list of numbers, strings or booleans "
                                     "(for layer lists use n_layers and width)")
        elif "low" in spec:
            spec = {**spec, **{k: _number(spec[k], f"{where}: {k}") for k in ("low", "high", "step") if k in spec}}
            if "high" not in spec or not spec["low"] < spec["high"]:
                raise ParameterError(f"{where}: need low < high, got {dict(spec)}")
        else:
            for part in ("n_layers", "width"):
                bounds = spec.get(part)
                if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) for b in bounds)
                        and 1 <= bounds[0] <= bounds[1]):
                    raise ParameterError(f"{where}: {part} must be [low, high] with 1 ≤ low ≤ high, got {bounds!r}")
        return cls(key, dict(spec))

    def suggest(self, trial: Any) -> Any:
        """Draw this dimension's value from an Optuna trial (or a FixedTrial)."""
        spec = self.spec
        if "choices" in spec:
            return trial.suggest_categorical(self.name, spec["choices"])
        if "low" in spec:
            log_scale = bool(spec.get("log", False))
            if all(isinstance(spec.get(k, 1), int) and not isinstance(spec.get(k, 1), bool) for k in ("low", "high", "step")):
                return trial.suggest_int(self.name, spec["low"], spec["high"], step=spec.get("step", 1), log=log_scale)
            return trial.suggest_float(self.name, float(spec["low"]), float(spec["high"]),
                                       step=spec.get("step"), log=log_scale)
        n = trial.suggest_int(f"{self.name}.n", *spec["n_layers"])
        return [trial.suggest_int(f"{self.name}.{i}", *spec["width"], log=bool(spec.get("log", False)))
                for i in range(n)]

    def first(self) -> dict[str, Any]:
        """Parameter values of one point in the space (to check a config before a study)."""
        spec = self.spec
        if "choices" in spec:
            return {self.name: spec["choices"][0]}
        if "low" in spec:
            return {self.name: spec["low"]}
        n = spec["n_layers"][0]
        return {f"{self.name}.n": n, **{f"{self.name}.{i}": spec["width"][0] for i in range(n)}}


def _number(value: Any, where: str) -> int | float:
    """A bound as a number; YAML reads 1e-5 (no dot) as a string, so strings are parsed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: expected a number, got {value!r}") from None


@dataclass
class StudyConfig:
    """Everything a hyperparameter study depends on; ``malaflow hpo CONFIG.yaml`` reads it."""

    training: dict[str, Any] | str  # the base training config (mapping, or a YAML file)
    search: dict[str, Any]
    output: str = "hpo/study"
    trials: int = 20
    seed: int = 0
    objective: str = "band_energy"
    pruner: str = "median"
    startup_trials: int = 5  # trials finished before the median pruner stops any
    report_every: int = 10  # epochs between scores (and pruning decisions)
    parallel: int = 1  # trials at once on a Dask cluster
    storage: str | None = None  # journal file (default <output>/study.journal) or an SQLAlchemy URL
    test: dict[str, Any] | None = None  # snapshots to test the best model on, e.g. {split: test}
    dimensions: list[Dimension] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        checks = [
            (self.trials >= 1, f"trials must be ≥ 1, got {self.trials}"),
            (self.objective in OBJECTIVES, f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}"),
            (self.pruner in PRUNERS, f"pruner must be one of {list(PRUNERS)}, got {self.pruner!r}"),
            (self.report_every >= 1, f"report_every must be ≥ 1, got {self.report_every}"),
            (self.parallel >= 1, f"parallel must be ≥ 1, got {self.parallel}"),
            (isinstance(self.search, Mapping) and bool(self.search), "search must map config keys to ranges"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(f"study config: {message}")
        self.dimensions = [Dimension.parse(k, v) for k, v in self.search.items()]
        names = [n for d in self.dimensions for n in d.first()]
        if len(set(names)) != len(names):
            raise ParameterError(f"study config: search keys collide: {sorted(self.search)}")

    @classmethod
    def load(cls, source: StudyConfig | Mapping[str, Any] | str | Path) -> StudyConfig:
        """From a config object, a dict, or a YAML file (paths in it relative to the file)."""
        if isinstance(source, StudyConfig):
            return source
        base = Path.cwd()
        if isinstance(source, (str, Path)):
            source, base = read_yaml(Path(source), "study config"), Path(source).parent
        check_keys(source, (f.name for f in dataclasses.fields(cls) if f.init), "study config")
        if "training" not in source or "search" not in source:
            raise ParameterError("study config: needs 'training' (a training config or its YAML file) and 'search'")
        source = dict(source)
        training = source["training"]
        if isinstance(training, (str, Path)):
            training = TrainingConfig.load(base / training)
        elif isinstance(training, Mapping):
            training = TrainingConfig.load(training)
            if training.catalog:
                training.catalog = str((base / training.catalog).resolve())
        else:
            raise ParameterError("study config: training must be a mapping or the path of a training YAML")
        source["training"] = dataclasses.asdict(training)
        source["output"] = str((base / source.get("output", cls.output)).resolve())
        if source.get("storage") and "://" not in source["storage"]:
            source["storage"] = str((base / source["storage"]).resolve())
        config = cls(**source)
        config.check()
        return config

    def check(self) -> None:
        """Build one point of the search space, so that a wrong key or value fails now."""
        import optuna

        values = {k: v for d in self.dimensions for k, v in d.first().items()}
        sample = self.trial_config(optuna.trial.FixedTrial(values), Path(self.output) / "check")
        get_model(sample.model["plugin"], sample.model.get("params") or {})
        get_descriptor(sample.descriptor["plugin"], sample.descriptor.get("params") or {})

    def trial_config(self, trial: Any, output: Path) -> TrainingConfig:
        """The training config of one trial: the base one with the trial's values set."""
        config = copy.deepcopy(self.training)
        for dim in self.dimensions:
            *parents, last = dim.key.split(".")
            node = config
            for part in parents:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict):
                    raise ParameterError(f"search: {dim.key}: {part} is not a mapping in the training config")
            node[last] = dim.suggest(trial)
        config["output"] = str(output)
        try:
            return TrainingConfig.load(config)
        except ParameterError as exc:
            raise ParameterError(f"search space gives a bad training config: {exc}") from None

    @property
    def storage_url(self) -> str:
        return self.storage or str(Path(self.output) / "study.journal")


@dataclass
class StudyResult:
    """What a study found: its best trial's model, parameters and score, and the report."""

    study: Any  # optuna.Study
    best_model: Path
    best_params: dict[str, Any]
    best_value: float
    table: str
    files: dict[str, Path]
    test_errors: list[Any] = field(default_factory=list)  # evaluation.Errors of the best model


# --------------------------------------------------------------------------- storage


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


def _study_name(config: StudyConfig) -> str:
    return Path(config.output).name


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
        study_name=_study_name(config), storage=_storage(config.storage_url), load_if_exists=True,
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.seed), pruner=_pruner(config),
    )
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was interrupted at step %s; retrying it", trial.number, trial.last_step)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    return study


def _sampler(study: Any, seed: int) -> Any:
    """A TPE sampler seeded by the study's seed and the index of the parameter set it
    draws next (trials less retries), not by when the driver started: a resumed or
    extended study goes on with the sequence a straight run would have drawn. TPE keeps
    no state but its random generator (it reads the finished trials from the storage)."""
    import optuna

    drawn = sum("retry_of" not in t.user_attrs for t in study.trials)
    return optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([seed, drawn]).generate_state(1)[0]))


def _counted(study: Any) -> int:
    """Trials that count toward the budget: finished ones, less those interrupted (their
    retry counts instead)."""
    import optuna

    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                        optuna.trial.TrialState.FAIL))
    retried = {t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs}
    return sum(t.number not in retried for t in finished)


# --------------------------------------------------------------------------- trials


def _trial_dir(config: StudyConfig, number: int) -> Path:
    return Path(config.output) / "trials" / f"{number:04d}"


def _ask(study: Any, config: StudyConfig, client: Any) -> tuple[Any, TrainingConfig, dict[int, float]]:
    """Start a trial: draw its parameters, hand it an interrupted run's folder if it is a
    retry, and compute its descriptors (distributed, cached in the stores) beforehand so
    that concurrent trials never write the same store."""
    study.sampler = _sampler(study, config.seed)
    trial = study.ask()
    training = config.trial_config(trial, _trial_dir(config, trial.number))
    earlier: dict[int, float] = {}
    if "retry_of" in trial.user_attrs:
        old = study.trials[trial.user_attrs["retry_of"]]
        earlier = dict(old.intermediate_values)
        source = _trial_dir(config, old.number)
        if source.is_dir() and not Path(training.output).exists():
            source.rename(training.output)
    descriptor = get_descriptor(training.descriptor["plugin"], training.descriptor.get("params") or {})
    compute_descriptors(list(selected_snapshots(training).stores.values()), descriptor, client=client, progress=False)
    return trial, training, earlier


def score(model: Any, stores: list[Path], objective: str) -> float:
    """The objective of a trained model on stored snapshots: mean |ΔE_band| (meV/atom)
    or mean LDOS MSE."""
    from .evaluation import evaluate_store

    errors = [evaluate_store(model, store) for store in stores]
    if objective == "band_energy":
        return sum(abs(e.band_energy_mev_per_atom) for e in errors) / len(errors)
    return sum(e.ldos_mse for e in errors) / len(errors)


def run_trial(config: StudyConfig, trial_id: int, training: TrainingConfig, earlier: dict[int, float]) -> dict[str, Any]:
    """One trial, start to end (a Dask task): train segment by segment, score, report,
    stop when pruned. Its dask work runs on this worker's threads — submitting to the
    cluster from inside a task could wait on workers the trials themselves occupy."""
    import optuna

    from .artifact import load_model
    from .training import train_here

    study = optuna.load_study(study_name=_study_name(config), storage=_storage(config.storage_url),
                              pruner=_pruner(config))
    trial = optuna.trial.Trial(study, trial_id)
    for step, value in sorted(earlier.items()):
        trial.report(value, step)
    snapshots = selected_snapshots(training)
    stores = [snapshots.stores[i] for i in snapshots.validation]
    checkpoint = Path(training.output) / "model.json"
    resumed = json.loads(checkpoint.read_text())["metadata"]["epochs_done"] if checkpoint.is_file() else 0
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        while True:
            model = load_model(train_here(training, resume=True, max_epochs=config.report_every, progress=False))
            epochs, stopped = model.metadata["epochs_done"], model.metadata["early_stopped"]
            value = score(model, stores, config.objective)
            if not math.isfinite(value):
                raise MalaflowError(f"trial {trial.number}: the objective is {value} after epoch {epochs}")
            trial.report(value, epochs)
            finished = epochs >= training.epochs or stopped
            if finished or trial.should_prune():
                break
    return {"value": value, "pruned": not finished, "epochs": epochs, "resumed_from_epoch": resumed,
            "seconds": time.perf_counter() - t0, "model": training.output}


def _tell(study: Any, trial: Any, outcome: dict[str, Any] | BaseException) -> bool:
    """Record a trial's outcome; False if it failed."""
    import optuna

    if isinstance(outcome, BaseException):
        log.warning("trial %d failed: %s", trial.number, outcome)
        trial.set_user_attr("error", str(outcome))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False
    for key in ("epochs", "resumed_from_epoch", "seconds", "model"):
        trial.set_user_attr(key, outcome[key])
    if outcome["pruned"]:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, outcome["value"])
    return True


# --------------------------------------------------------------------------- the study


def optimize(
    config: StudyConfig | Mapping[str, Any] | str | Path,
    client: Any = None,
    trials: int | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run (or go on with) a hyperparameter study; returns its best model and report.

    ``trials`` overrides the study's trial budget. With a Dask ``client`` (or a session
    default client) each trial is one task — on a GPU worker when the cluster offers
    one — and ``config.parallel`` trials run at once; without, trials run here, one
    after the other.
    """
    config = StudyConfig.load(config)
    if trials is not None:
        config.trials = trials
    client = client or session_client()
    study = open_study(config)
    todo = max(0, config.trials - _counted(study))
    bar = tqdm(total=config.trials, initial=config.trials - todo, desc=f"study {_study_name(config)}",
               unit="trial", disable=not progress)
    failures = 0

    def told(trial: Any, outcome: dict[str, Any] | BaseException) -> None:
        nonlocal failures
        failures = 0 if _tell(study, trial, outcome) else failures + 1
        if failures >= _MAX_FAILURES:
            raise MalaflowError(f"{failures} trials in a row failed; the last: {outcome}")
        bar.update()
        if any(t.state.name == "COMPLETE" for t in study.trials):
            bar.set_postfix(best=f"{study.best_value:.4g}")

    try:
        if client is None:
            for _ in range(todo):
                trial, training, earlier = _ask(study, config, None)
                try:
                    outcome = run_trial(config, trial._trial_id, training, earlier)
                except Exception as exc:  # recorded as a failed trial; the study goes on
                    outcome = exc
                told(trial, outcome)
        else:
            _run_on_cluster(study, config, client, todo, told)
    finally:
        bar.close()
    return report(study, config)


def _run_on_cluster(study: Any, config: StudyConfig, client: Any, todo: int, told: Any) -> None:
    from distributed import wait

    resources = task_resources(client, {"GPU": 1})
    running: dict[Any, Any] = {}
    started = 0
    try:
        while started < todo or running:
            while started < todo and len(running) < config.parallel:
                trial, training, earlier = _ask(study, config, client)
                future = client.submit(run_trial, config, trial._trial_id, training, earlier,
                                       pure=False, resources=resources, key=f"trial-{_study_name(config)}-{trial.number}")
                running[future] = trial
                started += 1
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for future in done:
                trial = running.pop(future)
                told(trial, future.exception() or future.result())
    finally:
        client.cancel(list(running))


# --------------------------------------------------------------------------- results


def trials_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective, epochs, time, parameters."""
    rows = []
    for t in study.trials:
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "value": t.value,
            "epochs_run": t.user_attrs.get("epochs"), "seconds": t.user_attrs.get("seconds"),
            "retry_of": t.user_attrs.get("retry_of"), **t.params,
            "error": t.user_attrs.get("error"),
        })
    return rows


def format_table(rows: list[dict[str, Any]], objective: str, limit: int | None = None) -> str:
    """The finished trials, best first."""
    done = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["value"])[:limit]
    params = list(dict.fromkeys(k for r in rows for k in r if k not in
                                ("trial", "state", "value", "epochs_run", "seconds", "retry_of", "error")))
    head = ["trial", "state", OBJECTIVES[objective], "epochs run"] + params
    cells = [[str(r["trial"]), r["state"], f"{r['value']:.5g}", str(r["epochs_run"])]
             + [_short(r.get(p)) for p in params] for r in done]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(study: Any, config: StudyConfig) -> StudyResult:
    """Write the study's table (CSV), best model, plots and an HTML page; test the best
    model on ``config.test`` snapshots if given."""
    from .artifact import load_model
    from .plots import plot_param_importances, plot_study_history

    out = Path(config.output)
    rows = trials_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        errors = sorted({r["error"] for r in rows if r["error"]})
        raise MalaflowError(f"study {out}: no trial finished" + (f"; errors: {errors}" if errors else ""))
    files = {"trials": out / "trials.csv"}
    with open(files["trials"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    best = study.best_trial
    files["best_model"] = _copy_model(Path(best.user_attrs["model"]), out / "best-model")
    files["history"] = plot_study_history(study, OBJECTIVES[config.objective], out / "history.png")
    importances = _importances(study)
    if importances:
        files["importances"] = plot_param_importances(importances, out / "importances.png")
    test_errors = []
    if config.test:
        from .evaluation import evaluate_store

        training = TrainingConfig.load(config.training)
        cat = Catalog.load(training.catalog or default_catalog_path(write=True))
        model = load_model(files["best_model"])
        test_errors = [evaluate_store(model, cat.store_path(i), i) for i in select_ids(cat, config.test, "test")]
    table = format_table(rows, config.objective, limit=10)
    summary = {"study": _study_name(config), "objective": config.objective, "best_trial": best.number,
               "best_value": best.value, "best_params": best.params, "importances": importances,
               "test_errors": [e.as_dict() for e in test_errors], "trials": len(rows)}
    files["best"] = out / "best.json"
    files["best"].write_text(json.dumps(summary, indent=1))
    files["report"] = _write_html(out / "report.html", config, summary, table, files)
    return StudyResult(study, files["best_model"], best.params, best.value, table, files, test_errors)


def _importances(study: Any) -> dict[str, float]:
    """Parameter importances (Optuna's default evaluator); empty while too few trials
    finished or no parameter varied."""
    import optuna

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # about too few trials: the plot is a first look anyway
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:
        log.info("no parameter importances yet: %s", exc)
        return {}


def _copy_model(source: Path, dest: Path) -> Path:
    """Copy a trial's model folder (without its training checkpoint) to ``dest``,
    replacing the previous one only once the copy is complete."""
    with atomic_directory(dest, overwrite=True) as tmp:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return dest


def _write_html(path: Path, config: StudyConfig, summary: dict[str, Any], table: str, files: dict[str, Path]) -> Path:
    images = "".join(
        f'<img alt="{key}" src="data:image/png;base64,{base64.b64encode(files[key].read_bytes()).decode()}">'
        for key in ("history", "importances") if key in files
    )
    params = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_short(v))}</td></tr>"
                     for k, v in summary["best_params"].items())
    tests = "".join(f"<tr><td>{html.escape(e['snapshot'])}</td><td>{e['band_energy_mev_per_atom']:.3f}</td>"
                    f"<td>{e['fermi_mev']:.3f}</td><td>{e['density_relative']:.5f}</td></tr>"
                    for e in summary["test_errors"])
    page = f"""<!doctype html><meta charset="utf-8"><title>malaflow study {html.escape(summary['study'])}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{padding:0 .8em;text-align:right}}
img{{max-width:49%}}</style>
<h1>Study {html.escape(summary['study'])}</h1>
<p>{summary['trials']} trials; objective {html.escape(OBJECTIVES[config.objective])} on the validation snapshots;
pruner {config.pruner}; seed {config.seed}. Best: trial {summary['best_trial']}, {summary['best_value']:.5g};
model in <code>{html.escape(str(files['best_model']))}</code>.</p>
<table><tr><th>parameter</th><th>best value</th></tr>{params}</table>
{f'<h2>Best model on the test snapshots</h2><table><tr><th>snapshot</th><th>ΔE_band meV/atom</th><th>ΔE_F meV</th><th>density rel.</th></tr>{tests}</table>' if tests else ''}
<h2>Trials</h2><pre>{html.escape(table)}</pre>{images}
"""
    path.write_text(page)
    return path
