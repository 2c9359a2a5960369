"""What lets several processes write one catalog.yaml: a three-way merge of records,
datasets and failures (what this process changed since it read the file, applied to
what the file holds now). The lock around it is in :meth:`Catalog.save`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog

LOCK_TIMEOUT_S = 120


@dataclass
class State:
    """What save() compares: records (as YAML), datasets and failures by key."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, cat: Catalog) -> State:
        return cls({r.id: r.to_yaml() for r in cat.records}, copy.deepcopy(cat.datasets), copy.deepcopy(cat.failed))

    def merge_onto(self, base: State, disk: Catalog, into: Catalog) -> None:
        """Set ``into``'s content to ``disk`` plus the changes from ``base`` to ``self``."""
        records = {**{r.id: r for r in disk.records}, **{r.id: r for r in into.records}}
        theirs = {r.id: r.to_yaml() for r in disk.records}
        into.records = [records[id] for id in _merged(base.records, self.records, theirs)]
        into.datasets = _merged(base.datasets, self.datasets, disk.datasets)
        into.failed = _merged(base.failed, self.failed, disk.failed)


def _merged(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``theirs`` with the keys ``ours`` added or changed since ``base``, less those it removed."""
    out = dict(theirs)
    out.update({k: v for k, v in ours.items() if base.get(k) != v})
    for k in set(base) - set(ours):
        out.pop(k, None)
    return out
