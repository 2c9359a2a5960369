"""A malaflow snapshot store read as raw data: a folder ``X.zarr`` written by malaflow
(here, on another machine, or shipped with a package) becomes a catalog entry whose own
store is written from it. The shipped demo dataset is held this way: compressed stores are
the smallest form of an LDOS on the grid that keeps every digit.

The store's files are the raw files (checksummed by the catalog); the provenance it
carries from its own raw files (pw.x outputs, cubes) is kept as ``source_provenance``.
Descriptors in it are not carried over: they are recomputed with the parameters asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from malaflow import Snapshot, hookimpl
from malaflow.errors import InputFileError, StoreError
from malaflow.readers import Reader, file_provenance
from malaflow.store import DESCRIPTOR_GROUP, open_snapshot
from malaflow.xarray_backend import backend_for


def is_snapshot_store(path: Path) -> bool:
    return path.is_dir() and (path / "zarr.json").is_file() and "malaflow_format" in (path / "zarr.json").read_text(
        errors="replace")


class ZarrStoreReader(Reader):
    """A malaflow snapshot store (``X.zarr``) as raw input."""

    name = "zarr"
    description = "a malaflow snapshot store (X.zarr), e.g. shipped or copied from elsewhere"

    def can_read(self, path: Path) -> bool:
        return is_snapshot_store(Path(path))

    def read(self, path: Path, **options: Any) -> Snapshot:
        path = Path(path)
        if options:
            raise InputFileError(path, f"unknown options for the zarr reader: {sorted(options)}")
        if not is_snapshot_store(path):
            raise InputFileError(path, "not a malaflow snapshot store (a folder X.zarr with a zarr.json "
                                       "holding 'malaflow_format')")
        try:
            snapshot = Snapshot.from_dataset(open_snapshot(path))
        except StoreError as exc:
            raise InputFileError(path, str(exc)) from None
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path).parts[0] != DESCRIPTOR_GROUP)
        snapshot.provenance = {"source_provenance": snapshot.provenance, **file_provenance(files)}
        return snapshot


ZarrStoreBackend = backend_for(ZarrStoreReader)


@hookimpl
def malaflow_readers() -> list[type]:
    return [ZarrStoreReader]
