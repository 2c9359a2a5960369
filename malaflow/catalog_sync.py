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
        ours = {r.id: r for r in into.records}
        records = {r.id: r for r in disk.records}
        for id, entry in self.records.items():
            if base.records.get(id) != entry:
                records[id] = ours[id]
        for id in set(base.records) - set(self.records):
            records.pop(id, None)
        into.records = list(records.values())
        into.datasets = _merged(base.datasets, self.datasets, disk.datasets)
        into.failed = _merged(base.failed, self.failed, disk.failed)


def _merged(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    out = dict(theirs)
    out.update({k: v for k, v in ours.items() if base.get(k) != v})
    for k in set(base) - set(ours):
        out.pop(k, None)
    return out
