"""catalog.yaml: the record of every snapshot a project has, and how to query it.

Each snapshot record says where its raw DFT files are (paths relative to the catalog,
with SHA-256 checksums), which reader plugin reads them, where its Zarr store is, and
the facts users select datasets by: elements, number of atoms, temperature, grid,
reference energies, and a split tag (train/validation/test).

    cat = Catalog.load("catalog.yaml")
    train = cat.query(elements=["Be"], temperature=(250, 350), split="train")
    ds = cat.open(train[0].id)
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from .catalog_record import RECORD_FIELDS, REQUIRED_FIELDS, SPLITS, SnapshotRecord, plain
from .catalog_sync import State
from .config import read_yaml
from .errors import CatalogError, InputFileError, MalaflowError
from .readers import read_snapshot, sha256
from .grid import Chunks
from .snapshot import Snapshot
from .store import open_snapshot, write_snapshot

log = logging.getLogger(__name__)

CATALOG_VERSION = 1
TOP_LEVEL_KEYS = {"version", "store_dir", "datasets", "snapshots", "failed"}


class Catalog:
    """The snapshots recorded in one catalog.yaml, with their datasets."""

    def __init__(
        self,
        path: str | Path,
        records: Iterable[SnapshotRecord] = (),
        datasets: dict[str, dict[str, Any]] | None = None,
        store_dir: str = "stores",
        failed: dict[str, dict[str, Any]] | None = None,
    ):
        self.path = Path(path).absolute()
        self.records = list(records)
        self.datasets = dict(datasets or {})
        self.store_dir = store_dir
        #: configurations whose DFT run failed ({id: {reason, scratch}}), never ingested
        self.failed = dict(failed or {})
        #: the file's content as this object last read or wrote it: save() writes only
        #: what changed since, onto the file's current content (other writers' changes stay)
        self._base = State()

    # ------------------------------------------------------------------ files

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str | Path) -> Path:
        """A path from the catalog (relative to its folder) as a usable path."""
        return (self.root / relative).resolve()

    def relative(self, path: str | Path) -> str:
        return os.path.relpath(Path(path).absolute(), self.root)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read and validate a catalog.yaml."""
        path = Path(path)
        if not path.is_file():
            raise CatalogError(f"{path}: no catalog here (create one with `malaflow catalog add`)")
        try:
            doc = read_yaml(path, "catalog", lines=True)
        except InputFileError as exc:
            raise CatalogError(str(exc)) from None
        if not isinstance(doc, dict):
            raise CatalogError(f"{path}: expected a mapping with 'snapshots:' at the top level")
        unknown = sorted(set(doc) - TOP_LEVEL_KEYS)
        if unknown:
            raise CatalogError(f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}; a catalog holds "
                               f"{', '.join(sorted(TOP_LEVEL_KEYS))}")
        if doc.get("version", CATALOG_VERSION) != CATALOG_VERSION:
            raise CatalogError(f"{path}: catalog version {doc.get('version')!r}; this malaflow reads {CATALOG_VERSION}")
        snapshots = doc.get("snapshots") or []
        if not isinstance(snapshots, list):
            raise CatalogError(f"{path}:{getattr(doc, 'line', 1)}: 'snapshots' must be a list of records")
        records = [cls._record(path, i, entry) for i, entry in enumerate(snapshots)]
        seen: dict[str, int] = {}
        for i, r in enumerate(records):
            if r.id in seen:
                raise CatalogError(
                    f"{path}:{getattr(snapshots[i], 'line', '?')}: snapshot id {r.id!r} appears twice "
                    f"(first as entry {seen[r.id] + 1})"
                )
            seen[r.id] = i
        datasets = doc.get("datasets") or {}
        if not isinstance(datasets, dict):
            raise CatalogError(f"{path}: 'datasets' must be a mapping of name to description")
        failed = doc.get("failed") or {}
        if not isinstance(failed, dict):
            raise CatalogError(f"{path}: 'failed' must be a mapping of id to reason")
        catalog = cls(path, records, plain(datasets), doc.get("store_dir", "stores"), plain(failed))
        catalog._base = State.of(catalog)
        return catalog

    @staticmethod
    def _record(path: Path, index: int, entry: Any) -> SnapshotRecord:
        line = getattr(entry, "line", "?")
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: snapshot entry {index + 1} must be a mapping, got {entry!r}")
        label = f"{path}:{line}: snapshot {entry.get('id', f'#{index + 1}')!r}"
        missing = [f for f in REQUIRED_FIELDS if f not in entry]
        if missing:
            raise CatalogError(f"{label}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(entry) - set(RECORD_FIELDS))
        if unknown:
            raise CatalogError(f"{label}: unknown field(s) {', '.join(unknown)}; known: {', '.join(RECORD_FIELDS)}")
        for name, value in entry.items():
            check, expected = RECORD_FIELDS[name]
            if value is not None and not check(value):
                raise CatalogError(f"{label}: field {name!r} must be {expected}, got {value!r}")
        return SnapshotRecord(**plain(dict(entry)))

    def save(self) -> None:
        """Write this object's changes into catalog.yaml, safely beside other writers.

        Under a lock file (processes and hosts sharing the file system), the catalog as
        it is on disk now is read, the records, datasets and failures this object added,
        changed or removed since it was loaded are applied to it, and the result replaces
        the file atomically (temporary file, then rename)."""
        from filelock import FileLock, Timeout

        from .catalog_sync import LOCK_TIMEOUT_S

        lock = FileLock(str(self.path.with_name(f".{self.path.name}.lock")))
        try:
            with lock.acquire(timeout=LOCK_TIMEOUT_S):
                if self.path.is_file():
                    State.of(self).merge_onto(self._base, Catalog.load(self.path), self)
                self._write()
                self._base = State.of(self)
        except Timeout:
            raise CatalogError(f"{self.path}: another process has held {lock.lock_file} for "
                               f"{LOCK_TIMEOUT_S} s; if none runs, delete that file") from None

    def _write(self) -> None:
        doc = {
            "version": CATALOG_VERSION,
            "store_dir": self.store_dir,
            "datasets": self.datasets,
            "snapshots": [r.to_yaml() for r in self.records],
        }
        if self.failed:
            doc["failed"] = self.failed
        tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(
                "# malaflow catalog: snapshots, raw files (relative to this file) and stores.\n"
                + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
            )
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ queries

    def get(self, id: str) -> SnapshotRecord:
        for r in self.records:
            if r.id == id:
                return r
        raise CatalogError(f"{self.path}: no snapshot {id!r} (known: {', '.join(r.id for r in self.records) or 'none'})")

    def query(
        self,
        elements: Sequence[str] | str | None = None,
        temperature: tuple[float, float] | None = None,
        code: str | None = None,
        split: str | None = None,
        dataset: str | None = None,
    ) -> list[SnapshotRecord]:
        """Records matching every criterion given.

        ``elements``: the snapshot contains all of these; ``temperature``: (lo, hi) K,
        inclusive; ``code``, ``split``, ``dataset``: equal.
        """
        if isinstance(elements, str):
            elements = [elements]
        if split is not None and split not in SPLITS:
            raise CatalogError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        out = []
        for r in self.records:
            if elements and not set(elements) <= set(r.elements):
                continue
            if temperature is not None:
                lo, hi = temperature
                if r.temperature is None or not lo <= r.temperature <= hi:
                    continue
            if code is not None and r.code != code:
                continue
            if split is not None and r.split != split:
                continue
            if dataset is not None and r.dataset != dataset:
                continue
            out.append(r)
        return out

    def store_path(self, id: str) -> Path:
        return self.resolve(self.get(id).store)

    def open(self, id: str, chunks: Chunks | str = "stored"):
        """The snapshot's dataset, lazily (dask-backed), from its Zarr store."""
        store = self.store_path(id)
        if not store.exists():
            raise CatalogError(
                f"snapshot {id!r}: its store {store} does not exist yet; "
                f"run `malaflow catalog ingest {id}` to write it from the raw files"
            )
        return open_snapshot(store, chunks=chunks)

    # ------------------------------------------------------------------ writing

    def add(
        self,
        path: str | Path,
        reader: str | None = None,
        id: str | None = None,
        dataset: str | None = None,
        split: str | None = None,
        store: str | Path | None = None,
        chunks: Chunks = None,
        overwrite: bool = False,
        write_store: bool = True,
        **options: Any,
    ) -> SnapshotRecord:
        """Read ``path`` with a reader plugin, write its Zarr store, record it, save.

        ``write_store=False`` records the snapshot only: :meth:`ingest` writes its store
        when it is needed (many raw files recorded at once, stores written in parallel or
        elsewhere; a catalog shipped read-only beside its raw files)."""
        path = Path(path)
        snapshot = read_snapshot(path, reader=reader, **options)
        reader = reader or _reader_that_read(path)
        id = check_id(id or _default_id(path))
        if any(r.id == id for r in self.records) and not overwrite:
            raise CatalogError(f"{self.path}: snapshot {id!r} is recorded already; replace it with overwrite=True (--overwrite at the command line) or choose another id")
        if split is not None and split not in SPLITS:
            raise CatalogError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        store_path = Path(store) if store is not None else self.root / self.store_dir / f"{id}.zarr"
        unrecorded = store_path.exists() and store_path.resolve() not in self._recorded_stores()
        if unrecorded and write_store:  # left by an add killed between writing the store and saving the record
            log.warning("%s exists but no record names it (an interrupted add?): replacing it", store_path)
        if write_store:
            write_snapshot(snapshot, store_path, chunks=chunks, overwrite=overwrite or unrecorded)
        record = self._make_record(snapshot, id, reader, path, store_path, dataset, split, options)
        self.records = [r for r in self.records if r.id != id] + [record]
        self.save()
        return record

    def _make_record(
        self, snap: Snapshot, id: str, reader: str, source: Path, store: Path,
        dataset: str | None, split: str | None, options: dict[str, Any],
    ) -> SnapshotRecord:
        energies = dict(snap.reference)
        if snap.fermi_energy is not None:
            energies["fermi_energy"] = snap.fermi_energy
        return SnapshotRecord(
            id=id,
            code=snap.code,
            reader=reader,
            source=self.relative(source),
            store=self.relative(store),
            dataset=dataset,
            options={k: _plain_option(v) for k, v in options.items()},
            raw={self.relative(p): h for p, h in snap.provenance.get("files", {}).items()},
            elements=snap.elements,
            n_atoms=snap.n_atoms,
            temperature=snap.temperature,
            grid_shape=list(snap.grid_shape) if snap.grid_shape else None,
            energies={k: float(v) for k, v in energies.items()},
            split=split,
        )

    def unrecorded_stores(self) -> list[Path]:
        """Stores in the store folder that no record names (e.g. from an add killed after
        writing its store): ``catalog validate`` lists them; adding their id replaces them."""
        folder = self.root / self.store_dir
        recorded = self._recorded_stores()
        return sorted(p for p in folder.glob("*.zarr") if p.resolve() not in recorded) if folder.is_dir() else []

    def _recorded_stores(self) -> set[Path]:
        return {self.resolve(r.store) for r in self.records}

    def verify(self, id: str) -> None:
        """Check the raw files of a record against their recorded checksums."""
        for rel, digest in self.get(id).raw.items():
            p = self.resolve(rel)
            if not p.is_file():
                raise CatalogError(f"snapshot {id!r}: raw file {p} is missing")
            if sha256(p) != digest:
                raise CatalogError(f"snapshot {id!r}: raw file {p} changed since it was catalogued (checksum differs)")

    def ingest(
        self, ids: Iterable[str] | None = None, force: bool = False, chunks: Chunks = None, progress: bool = True,
    ) -> list[Path]:
        """Write the Zarr store of each record (all, or ``ids``) from its raw files.

        Records whose store exists are skipped unless ``force``. Raw files are
        checked against their checksums first.
        """
        written = []
        records = [self.get(i) for i in ids] if ids is not None else list(self.records)
        todo = [r for r in records if force or not self.resolve(r.store).exists()]
        for record in tqdm(todo, desc="writing stores", unit="snapshot", disable=not progress or len(todo) < 2):
            store = self.resolve(record.store)
            self.verify(record.id)
            options = dict(record.options)
            snapshot = read_snapshot(self.resolve(record.source), reader=record.reader, **options)
            write_snapshot(snapshot, store, chunks=chunks, overwrite=force)
            written.append(store)
        return written


def _plain_option(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _reader_that_read(path: Path) -> str:
    from .plugins import list_plugins

    for info in list_plugins("readers"):
        if info.cls().can_read(path):
            return info.name
    raise MalaflowError(f"{path}: no reader recognises it")  # read_snapshot raised already


def _default_id(path: Path) -> str:
    name = path.name
    for suffix in (".in.npy", ".out.npy", ".info.json", ".out", ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def default_catalog_path(write: bool = False) -> Path:
    """$MALAFLOW_CATALOG, else ./catalog.yaml, else (only for reading, in a source checkout)
    the repository's catalog of MALA's Be2 files. A command that writes never falls back to
    the package's folder; an installed package has no such catalog (``malaflow demo`` makes
    one of the shipped dataset in a folder of the user's)."""
    env = os.environ.get("MALAFLOW_CATALOG")
    if env:
        return Path(env)
    if Path("catalog.yaml").is_file():
        return Path("catalog.yaml")
    if write:
        raise CatalogError(f"no catalog.yaml in {Path.cwd()}: create one with `malaflow catalog init`, "
                           "pass --catalog PATH, or set MALAFLOW_CATALOG")
    checkout = Path(__file__).resolve().parent.parent / "catalog.yaml"
    return checkout if checkout.is_file() else Path("catalog.yaml")


ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_id(id: str) -> str:
    """A snapshot id names its store folder: letters, digits, '.', '_', '+', '-' only."""
    if not isinstance(id, str) or not ID_PATTERN.fullmatch(id) or ".." in id:
        raise CatalogError(f"snapshot id {id!r}: use letters, digits, '.', '_', '+' and '-' only "
                           "(no path separators, no '..'), starting with a letter or digit")
    return id
