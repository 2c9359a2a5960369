"""The search space of a study and the study config: which training-config keys vary,
and how each is drawn from an Optuna trial."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_source, load_config, resolve
from ..descriptors import get_descriptor
from ..errors import ParameterError
from ..models import get_model
from ..training import TrainingConfig

OBJECTIVES = {"band_energy": "|ΔE_band| (meV/atom)", "ldos_loss": "LDOS MSE (1/(eV·Å³))²"}
PRUNERS = ("median", "successive_halving", "none")
_PRIMITIVES = (str, int, float, bool, type(None))


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
        data, base = config_source(source, "study config")
        if "training" not in data or "search" not in data:
            raise ParameterError("study config: needs 'training' (a training config or its YAML file) and 'search'")
        training = data["training"]
        if isinstance(training, (str, Path)):
            training = TrainingConfig.load(resolve(base, training))
        elif isinstance(training, Mapping):
            training = TrainingConfig.load(training, base=base)
        else:
            raise ParameterError("study config: training must be a mapping or the path of a training YAML")
        data["training"] = dataclasses.asdict(training)
        data.setdefault("output", cls.output)
        config = load_config(cls, data, "study config", paths=("output", "storage"), base=base)
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
    def name(self) -> str:
        """The study's name: its output folder's."""
        return Path(self.output).name

    @property
    def storage_url(self) -> str:
        return self.storage or str(Path(self.output) / "study.journal")
