"""Plugin parameters: a dataclass per plugin, checked and normalised the same way for
every kind of plugin (descriptors, models), so equal settings give an equal hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from .errors import ParameterError


def check_keys(given: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """Refuse keys a config does not have (a typo would otherwise be ignored silently)."""
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParameterError(f"{what}: unknown key(s) {unknown}; known: {sorted(known)}")


def param(default: Any, help: str, hashed: bool = True) -> Any:
    """A parameter field with a one-line explanation (shown by `malaflow descriptors list`).

    ``hashed=False`` marks a setting that changes how, not what, is computed (a device,
    a precision): it is left out of the stored parameters and their hash."""
    factory = (lambda: list(default)) if isinstance(default, list) else None
    if factory:
        return dataclasses.field(default_factory=factory, metadata={"help": help, "hashed": hashed})
    return dataclasses.field(default=default, metadata={"help": help, "hashed": hashed})


def describe_params(cls: type[Configurable]) -> list[tuple[str, Any, str]]:
    """(name, default, help) of each parameter of a plugin class."""
    defaults = dataclasses.asdict(cls.Params())
    return [(f.name, defaults[f.name], f.metadata.get("help", "")) for f in dataclasses.fields(cls.Params)]


class Configurable:
    """A plugin class with a ``Params`` dataclass: unknown parameters are refused, values
    are read as the type of their default, and the plugin's own checks run."""

    name: ClassVar[str]
    kind: ClassVar[str] = "plugin"
    Params: ClassVar[type]

    def __init__(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        given = {**(params or {}), **kwargs}
        fields = [f.name for f in dataclasses.fields(self.Params)]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ParameterError(
                f"{self.kind} {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters are: {', '.join(fields)}"
            )
        defaults = dataclasses.asdict(self.Params())
        label = f"{self.kind} {self.name!r}"
        self.params = self.Params(**{k: coerce(label, k, v, defaults[k]) for k, v in given.items()})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls.Params())

    def params_dict(self) -> dict[str, Any]:
        """The parameters that define the result, as plain JSON-able values (what is
        stored and hashed)."""
        values = {
            f.name: getattr(self.params, f.name)
            for f in dataclasses.fields(self.params)
            if f.metadata.get("hashed", True)
        }
        return json.loads(json.dumps(values, sort_keys=True))

    def hash_key(self) -> str:
        """What the parameters are parameters of, in :meth:`params_hash`: the plugin's name."""
        return self.name

    def params_hash(self) -> str:
        """Short hash of :meth:`hash_key` and parameters: equal settings, equal hash."""
        text = json.dumps({"plugin": self.hash_key(), "params": self.params_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def coerce(label: str, key: str, value: Any, default: Any) -> Any:
    """Read a parameter as the type of its default: 4 → 4.0 for a float, "8" is an error."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParameterError(f"{label}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{label}: {key} must be a list (default {default!r}), got {value!r}")
        return [coerce(label, f"{key}[{i}]", v, default[0]) if default else v for i, v in enumerate(value)]
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ParameterError(f"{label}: {key} must be text (default {default!r}), got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, Mapping):
            return {str(k): coerce(label, f"{key}[{k}]", v, default) for k, v in value.items()}
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ParameterError(f"{label}: {key} must be a number (default {default!r}), got {value!r}")
        if isinstance(default, int):
            if float(value) != int(value):
                raise ParameterError(f"{label}: {key} must be an integer, got {value!r}")
            return int(value)
        return float(value)
    return value
