"""One way to read a configuration — training, study, cluster and generation alike.

A config is a mapping or a YAML file holding one. Bad YAML is an error naming the file
and line; unknown keys are refused (a typo would otherwise be ignored silently); and a
relative path in a config is taken relative to the folder of the YAML file it is
written in (the working directory for a mapping built in Python) — one rule for every
path key of every config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import InputFileError, ParameterError
from .params import check_keys

T = TypeVar("T")


class LineDict(dict):
    """A mapping read from YAML that knows the line it starts on (for error messages)."""

    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """A YAML loader whose mappings are :class:`LineDict`."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
    d = LineDict(loader.construct_mapping(node, deep=True))
    d.line = node.start_mark.line + 1
    return d


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path, what: str, lines: bool = False) -> Any:
    """A YAML file's content (mappings as :class:`LineDict` with ``lines=True``); a
    missing file or bad YAML is an InputFileError with the line."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"{what} not found")
    try:
        return yaml.load(path.read_text(), Loader=_LineLoader if lines else yaml.SafeLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputFileError(path, f"not valid YAML: {exc}", None if mark is None else mark.line + 1) from None


def config_source(source: Mapping[str, Any] | str | Path, what: str) -> tuple[dict[str, Any], Path]:
    """(settings, folder their relative paths are relative to) of a mapping or YAML file."""
    if isinstance(source, (str, Path)):
        data, base = read_yaml(source, what), Path(source).resolve().parent
    else:
        data, base = source, Path.cwd()
    if not isinstance(data, Mapping):
        raise ParameterError(f"{what}: expected a mapping of settings, got {type(data).__name__}")
    return dict(data), base


def resolve(base: Path, value: Any) -> Any:
    """A path setting made absolute against ``base`` (None, absolute paths and URLs pass through)."""
    if value in (None, "") or "://" in str(value):
        return value
    return str((base / Path(value).expanduser()).resolve())


def load_config(
    cls: type[T], source: T | Mapping[str, Any] | str | Path, what: str, paths: Iterable[str] = (),
    base: Path | None = None,
) -> T:
    """A config dataclass from a mapping or YAML file: keys checked, the ``paths`` keys
    resolved (against ``base`` if given: a config nested in another one's file)."""
    if isinstance(source, cls):
        return source
    data, own_base = config_source(source, what)
    if isinstance(source, (str, Path)):
        what = f"{what} {source}"
    check_keys(data, (f.name for f in dataclasses.fields(cls) if f.init), what)
    hints = typing.get_type_hints(cls)
    for key in list(data):
        data[key] = typed(data[key], hints[key], f"{what}: {key}")
    for key in paths:
        if key in data:
            data[key] = resolve(base or own_base, data[key])
    try:
        return cls(**data)
    except TypeError as exc:  # a missing required key
        raise ParameterError(f"{what}: {exc}") from None


def typed(value: Any, hint: Any, label: str) -> Any:
    """``value`` as the type a config field declares, or a ParameterError saying what was
    expected. Numbers written as strings count (YAML reads ``3e-4`` as one); whole numbers
    must be whole (``epochs: 2.7`` is refused, not truncated); a bool is not a number."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if value is None and type(None) in options:
        return None
    kinds = [typing.get_origin(o) or o for o in options if o is not type(None)]
    got = f"{value!r} ({type(value).__name__})"
    if int in kinds or float in kinds:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ParameterError(f"{label}: expected {'a number' if float in kinds else 'a whole number'}, got {got}")
        if float in kinds:
            return float(number)
        if float(number) != int(number):
            raise ParameterError(f"{label}: expected a whole number, got {got}")
        return int(number)
    if kinds == [bool] and not isinstance(value, bool):
        raise ParameterError(f"{label}: expected true or false, got {got}")
    if kinds == [str] and not isinstance(value, str):
        raise ParameterError(f"{label}: expected text, got {got}")
    if kinds and all(k in (dict, Mapping) for k in kinds) and not isinstance(value, Mapping):
        raise ParameterError(f"{label}: expected a mapping (key: value lines), got {got}")
    return value
