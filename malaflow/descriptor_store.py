"""The descriptor arrays of a snapshot store and how a computation resumes.

An array is built in a hidden group ``descriptors/.partial-<name>`` and moved to
``descriptors/<name>`` when complete, so an interrupted run leaves nothing that looks
finished. Running the same computation again finds the partial group: if it was made
with the same parameters and chunking, the chunks already on disk are kept and only the
missing ones are computed (:func:`chunk_written`). One run per array at a time: a lock
file beside the store (:func:`descriptor_lock`) makes a second run wait, then find the
array done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from .descriptors import Descriptor, Structure, grid_blocks
from .errors import MalaflowError, StoreError
from .store import DESCRIPTOR_GROUP, grid_encoding, list_descriptors, open_descriptors

log = logging.getLogger(__name__)


def stored_match(path: Path, descriptor: Descriptor) -> str | None:
    """'same' if the store holds this plugin with equal parameters under its name,
    'different' if the name is taken by other parameters, None if free."""
    name = descriptor.store_name()
    if name not in list_descriptors(path):
        return None
    attrs = open_descriptors(path, name).attrs
    if attrs.get("params_unknown"):  # e.g. a MALA .in.npy nobody said the parameters of
        return "different"
    try:
        stored = type(descriptor)(attrs.get("params") or {})
    except MalaflowError:
        return "different"
    computed = attrs.get("features") or attrs.get("plugin", descriptor.name)  # older arrays name the plugin only
    if computed == descriptor.feature_set and stored.params_hash() == descriptor.params_hash():
        return "same"
    return "different"


PARTIAL = ".partial-"


def open_partial(path: Path, descriptor: Descriptor, structure: Structure, grid, sizes, dtype) -> tuple[Path, bool]:
    """The hidden group the array is built in: an interrupted run's, if it holds the same
    parameters and chunking (then the run resumes), else a new empty one."""
    name = descriptor.store_name()
    partial = path / DESCRIPTOR_GROUP / f"{PARTIAL}{name}"
    n_features = descriptor.n_features(structure)
    if partial.exists():
        try:
            old = zarr.open_array(str(partial / name), mode="r")
            same = (old.attrs.get("params_hash") == descriptor.params_hash()
                    and tuple(old.chunks) == sizes + (n_features,) and tuple(old.shape) == (*grid, n_features))
        except Exception:  # an unreadable leftover is simply replaced
            same = False
        if same:
            return partial, True
        shutil.rmtree(partial)
    zarr.open_group(path, mode="a", zarr_format=3).require_group(DESCRIPTOR_GROUP)
    empty = da.zeros((*grid, n_features), chunks=sizes + (n_features,), dtype=dtype)
    layout = descriptor.as_dataarray(empty).to_dataset()
    layout.to_zarr(path, group=f"{DESCRIPTOR_GROUP}/{partial.name}", mode="w", zarr_format=3,
                   consolidated=False, compute=False, encoding=grid_encoding(layout))
    return partial, False


def chunk_written(array_dir: Path, array: Any, block: tuple[slice, slice, slice]) -> bool:
    """Whether the Zarr chunk of ``block`` exists on disk."""
    index = tuple(s.start // c for s, c in zip(block, array.chunks[:3])) + (0,)
    return (array_dir / array.metadata.encode_chunk_key(index)).exists()


def interrupted_descriptors(path: str | Path) -> dict[str, tuple[int, int]]:
    """Descriptor arrays an interrupted run left in a store: {name: (chunks written, chunks)}.
    Running the same computation again resumes them."""
    root = Path(path) / DESCRIPTOR_GROUP
    status = {}
    for group in sorted(root.glob(f"{PARTIAL}*")) if root.is_dir() else []:
        name = group.name[len(PARTIAL):]
        array = zarr.open_array(str(group / name), mode="r")
        blocks = grid_blocks(tuple(array.shape[:3]), tuple(array.chunks[:3]))
        status[name] = (sum(chunk_written(group / name, array, b) for b in blocks), len(blocks))
    return status


LOCK_WAIT_S = float(os.environ.get("MALAFLOW_LOCK_TIMEOUT", 24 * 3600))


@contextlib.contextmanager
def descriptor_lock(store: Path, name: str) -> Iterator[None]:
    """Hold ``.<store>.lock-<name>`` beside the store (a file inside would be a foreign
    object in the Zarr hierarchy; the lock works across processes and hosts sharing the
    file system); say so while waiting for another run, give up after LOCK_WAIT_S."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(store.parent / f".{store.name}.lock-{name}"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s: another run is computing descriptors/%s; waiting for it", store, name)
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise StoreError(f"{store}: descriptors/{name} has been locked by another run for {LOCK_WAIT_S:g} s "
                             f"({lock.lock_file}); if none runs, delete that file") from None
    try:
        yield
    finally:
        lock.release()
