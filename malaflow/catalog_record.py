"""One record of catalog.yaml: its fields, what each must hold, and a YAML loader that
remembers line numbers so a bad record is named by file and line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


SPLITS = ("train", "validation", "test")


@dataclass
class SnapshotRecord:
    """One snapshot in the catalog. Paths are relative to the catalog's folder."""

    id: str
    code: str
    reader: str
    source: str
    store: str
    dataset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    elements: list[str] = field(default_factory=list)
    n_atoms: int | None = None
    temperature: float | None = None
    grid_shape: list[int] | None = None
    energies: dict[str, float] = field(default_factory=dict)
    split: str | None = None

    def to_yaml(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, [])}


# field name -> (checker, what is expected), for validation messages
def _is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


RECORD_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (_is_str, "a non-empty string"),
    "code": (_is_str, "a non-empty string (qe, vasp, mala, ...)"),
    "reader": (_is_str, "the name of a reader plugin"),
    "source": (_is_str, "a path relative to the catalog"),
    "store": (_is_str, "a path relative to the catalog"),
    "dataset": (_is_str, "a dataset name"),
    "options": (lambda v: isinstance(v, dict), "a mapping of reader options"),
    "raw": (
        lambda v: isinstance(v, dict) and all(_is_str(k) and _is_str(s) for k, s in v.items()),
        "a mapping of raw file path to SHA-256",
    ),
    "elements": (lambda v: isinstance(v, list) and all(_is_str(e) for e in v), "a list of element symbols"),
    "n_atoms": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "temperature": (lambda v: _is_num(v) and v >= 0, "a temperature in K (≥ 0)"),
    "grid_shape": (
        lambda v: isinstance(v, list) and len(v) == 3 and all(isinstance(n, int) and n > 0 for n in v),
        "three positive integers",
    ),
    "energies": (lambda v: isinstance(v, dict) and all(_is_num(x) for x in v.values()), "a mapping of name to eV"),
    "split": (lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}"),
}
REQUIRED_FIELDS = ("id", "code", "reader", "source", "store")


def plain(value: Any) -> Any:
    """Strip the line-number dict subclass so records dump as plain YAML."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
