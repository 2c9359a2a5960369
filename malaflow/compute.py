"""Running descriptor plugins over snapshots: lazy arrays, Dask tasks, Zarr stores.

:func:`descriptor_grid` gives a lazy dask array (for a prediction on a new structure);
:func:`compute_descriptors` computes into a snapshot store. There each task computes
one chunk (blockwise plugins) or one whole snapshot (LAMMPS) and writes its own Zarr
chunks, so nothing travels back to the client and a lost worker only costs its task.
The array is built under a hidden name and renamed into ``descriptors/<name>`` when
complete: an interrupted run leaves no array that looks finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from tqdm.auto import tqdm

from .descriptors import (
    DEFAULT_BATCH_POINTS,
    Descriptor,
    Structure,
    check_grid,
    compute_block,
    get_descriptor,
    grid_blocks,
)
from .errors import MalaflowError, StoreError
from .snapshot import (
    DESCRIPTOR_GROUP,
    SPATIAL_DIMS,
    Chunks,
    list_descriptors,
    move_into_place,
    open_descriptors,
    open_snapshot,
    spatial_chunks,
)

log = logging.getLogger(__name__)

Source = str | Path | Any  # a store path, a Snapshot, an xarray snapshot or ase.Atoms


def _chunk_sizes(grid_shape: tuple[int, int, int], chunks: Chunks) -> tuple[int, int, int]:
    return tuple(spatial_chunks(dict(zip(SPATIAL_DIMS, grid_shape)), chunks).values())


def _resolve(source: Source, grid_shape: Sequence[int] | None) -> tuple[Structure, tuple[int, int, int], Path | None]:
    """Structure, grid and (for a store) its path, from whatever the user passed."""
    if isinstance(source, (str, Path)):
        path = Path(source).resolve()
        ds = open_snapshot(path)
        grid = ds.attrs.get("grid_shape")
        if grid is None:
            raise StoreError(f"{path}: the snapshot has no grid; descriptors need one")
        return Structure.from_any(ds), check_grid(grid), path
    grid = grid_shape
    if grid is None and getattr(source, "grid_shape", None) is not None:
        grid = source.grid_shape
    if grid is None and hasattr(source, "attrs") and hasattr(source, "data_vars"):
        grid = source.attrs.get("grid_shape")
    if grid is None:
        raise MalaflowError(
            f"a {type(source).__name__} carries no grid; pass grid_shape=(nx, ny, nz)"
        )
    return Structure.from_any(source), check_grid(grid), None


def _as_dataarray(values: Any, descriptor: Descriptor, name: str) -> xr.DataArray:
    shape = values.shape
    return xr.DataArray(
        values,
        dims=SPATIAL_DIMS + ("feature",),
        coords={d: np.arange(n) for d, n in zip(SPATIAL_DIMS + ("feature",), shape)},
        name=name,
        attrs={
            "plugin": descriptor.name,
            "params": descriptor.params_dict(),
            "params_hash": descriptor.params_hash(),
        },
    )


# --------------------------------------------------------------------------- lazy


def descriptor_grid(
    source: Source,
    plugin: str | Descriptor = "bispectrum",
    params: Mapping[str, Any] | None = None,
    grid_shape: Sequence[int] | None = None,
    chunks: Chunks = None,
    batch_points: int = DEFAULT_BATCH_POINTS,
) -> xr.DataArray:
    """Descriptors of a structure as a lazy (x, y, z, feature) array, one task per chunk.

    Nothing is computed until the array is (by ``.compute()``, a Dask client, or a
    model mapping over its chunks). A plugin that is not blockwise becomes one task
    for the whole grid, rechunked afterwards.
    """
    descriptor = get_descriptor(plugin, params)
    structure, grid, _ = _resolve(source, grid_shape)
    sizes = _chunk_sizes(grid, chunks)
    n_features = descriptor.n_features(structure)
    if descriptor.blockwise:

        def block(block_info: dict | None = None) -> np.ndarray:
            location = block_info[None]["array-location"][:3]
            region = tuple(slice(a, b) for a, b in location)
            return compute_block(descriptor, structure, grid, region, batch_points)

        chunk_tuple = tuple(
            tuple(min(c, n - s) for s in range(0, n, c)) for n, c in zip(grid, sizes)
        ) + ((n_features,),)
        values = da.map_blocks(
            block, dtype=float, chunks=chunk_tuple, meta=np.empty((0, 0, 0, 0)),
            name=f"{descriptor.name}-{descriptor.params_hash()}",
        )
    else:
        import dask

        whole = dask.delayed(descriptor.compute_grid, pure=True)(structure, grid)
        values = da.from_delayed(whole, shape=(*grid, n_features), dtype=float).rechunk(sizes + (n_features,))
    return _as_dataarray(values, descriptor, descriptor.store_name())


# --------------------------------------------------------------------------- tasks


def session_client() -> Any:
    """The Dask distributed client of this session, if the user made one."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def task_resources(client: Any, wanted: Mapping[str, float] | None) -> dict[str, float] | None:
    """``wanted`` if some worker offers it, else None (then any CPU worker runs the task)."""
    if not wanted:
        return None
    for worker in client.scheduler_info().get("workers", {}).values():
        offered = worker.get("resources", {})
        if all(offered.get(k, 0) >= v for k, v in wanted.items()):
            return dict(wanted)
    return None


WORKER_TIMEOUT_S = float(os.environ.get("MALAFLOW_WORKER_TIMEOUT", 600))


def _wait_for_a_worker(client: Any) -> None:
    """Tasks sent to a cluster without workers would wait for ever: wait for one, bounded."""
    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
    except TimeoutError:
        raise MalaflowError(f"no Dask worker joined the cluster at {client.scheduler.address} in "
                            f"{WORKER_TIMEOUT_S:g} s (batch jobs still queued? see the dashboard "
                            f"{client.dashboard_link}; MALAFLOW_WORKER_TIMEOUT sets the wait)") from None


def run_tasks(
    tasks: Sequence[tuple[Callable[..., Any], tuple]],
    client: Any = None,
    desc: str = "tasks",
    unit: str = "task",
    progress: bool = True,
    resources: Mapping[str, float] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    workers: int | None = None,
) -> list[Any]:
    """Run independent ``(function, args)`` tasks on a Dask client or local threads
    (``workers`` of them, default one per core).

    Results come back in task order; ``on_result(index, result)`` is called as each task
    finishes (in the caller's thread); a progress bar counts finished tasks. The first
    failure cancels what has not started and is raised.
    """
    client = client or session_client()
    results: list[Any] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress or not tasks)
    if client is not None:
        from distributed import as_completed

        res = task_resources(client, resources)
        _wait_for_a_worker(client)
        futures = [client.submit(fn, *args, pure=False, resources=res) for fn, args in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
                bar.update()
        finally:
            client.cancel([f for f in futures if not f.done()])
            bar.close()
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(tasks)}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
                bar.update()
        finally:
            for future in futures:
                future.cancel()
            bar.close()
    return results


def _compute_region(
    descriptor: Descriptor,
    structure: Structure,
    grid: tuple[int, int, int],
    region: tuple[slice, slice, slice] | None,
    batch_points: int,
    array_path: str | None,
) -> np.ndarray | None:
    """One task: a block (or, with ``region=None``, the whole grid) of descriptors,
    written into the Zarr array at ``array_path`` or returned."""
    if region is None:
        values = np.asarray(descriptor.compute_grid(structure, grid), dtype=float)
        expected = (*grid, descriptor.n_features(structure))
        if values.shape != expected:
            raise MalaflowError(f"descriptor {descriptor.name!r} returned {values.shape}, expected {expected}")
        region = tuple(slice(0, n) for n in grid)
    else:
        values = compute_block(descriptor, structure, grid, region, batch_points)
    if array_path is None:
        return values
    zarr.open_array(array_path, mode="r+")[region + (slice(None),)] = values
    return None


def _tasks(descriptor, structure, grid, sizes, batch_points, array_path):
    if not descriptor.blockwise:
        return [(_compute_region, (descriptor, structure, grid, None, batch_points, array_path))]
    return [
        (_compute_region, (descriptor, structure, grid, block, batch_points, array_path))
        for block in grid_blocks(grid, sizes)
    ]


# --------------------------------------------------------------------------- stores


def _stored_match(path: Path, descriptor: Descriptor) -> str | None:
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
    if attrs.get("plugin", descriptor.name) == descriptor.name and stored.params_hash() == descriptor.params_hash():
        return "same"
    return "different"


PARTIAL = ".partial-"


def _open_partial(path: Path, descriptor: Descriptor, structure: Structure, grid, sizes, dtype) -> tuple[Path, bool]:
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
    _as_dataarray(empty, descriptor, name).to_dataset().to_zarr(
        path, group=f"{DESCRIPTOR_GROUP}/{partial.name}", mode="w", zarr_format=3,
        consolidated=False, compute=False,
    )
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


def compute_descriptors(
    sources: Source | Sequence[Source],
    plugin: str | Descriptor = "bispectrum",
    params: Mapping[str, Any] | None = None,
    chunks: Chunks = None,
    client: Any = None,
    overwrite: bool = False,
    grid_shape: Sequence[int] | None = None,
    batch_points: int = DEFAULT_BATCH_POINTS,
    dtype: Any = np.float32,
    progress: bool = True,
) -> xr.DataArray | list[xr.DataArray]:
    """Compute the descriptors of one or more snapshots, in parallel.

    ``sources`` are snapshot store paths (the result is written into each store as
    ``descriptors/<name>`` with the parameters and their hash in its attrs, and
    returned lazily), or in-memory structures (a :class:`~malaflow.Snapshot`, an
    ``ase.Atoms`` with ``grid_shape``; the result is returned in memory). A store that
    already holds this plugin with the same parameters is not recomputed; one that
    holds it with other parameters under the same name is an error unless
    ``overwrite=True``. Tasks run on ``client`` (or the session's default Dask
    client), else on local threads.
    """
    single = not isinstance(sources, (list, tuple))
    items = [sources] if single else list(sources)
    descriptor = get_descriptor(plugin, params)
    name = descriptor.store_name()
    with contextlib.ExitStack() as locks:
        # one run per descriptor array: a second waits, then finds the array done (a cache hit)
        for path in sorted({Path(s).resolve() for s in items if isinstance(s, (str, Path)) and Path(s).is_dir()}):
            locks.enter_context(descriptor_lock(path, name))
        out = _compute(items, descriptor, name, grid_shape, chunks, batch_points, dtype, overwrite, client, progress)
    return out[0] if single else out


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


def _compute(items: list, descriptor: Descriptor, name: str, grid_shape, chunks, batch_points, dtype, overwrite: bool,
             client: Any, progress: bool) -> list[xr.DataArray]:
    """compute_descriptors with the stores locked."""
    tasks: list[tuple[Callable[..., Any], tuple]] = []
    jobs: list[tuple[Path | None, Path | None, slice, tuple, int]] = []
    try:
        for source in items:
            structure, grid, path = _resolve(source, grid_shape)
            sizes = _chunk_sizes(grid, chunks)
            n_features = descriptor.n_features(structure)
            partial = None
            if path is not None:
                match = _stored_match(path, descriptor)
                if match == "same" and not overwrite:
                    log.info("%s: descriptors/%s present with equal parameters — cache hit", path, name)
                    jobs.append((path, None, slice(0, 0), grid, n_features))
                    continue
                if match == "different" and not overwrite:
                    raise StoreError(
                        f"{path}: descriptors/{name} was computed with other parameters "
                        f"({open_descriptors(path, name).attrs.get('params')}); "
                        "pass overwrite=True to replace it"
                    )
                partial, resumed = _open_partial(path, descriptor, structure, grid, sizes, dtype)
            array_path = None if partial is None else str(partial / name)
            new = _tasks(descriptor, structure, grid, sizes, batch_points, array_path)
            if partial is not None and resumed:
                array = zarr.open_array(array_path, mode="r")
                todo = [t for t in new if t[1][3] is None or not chunk_written(Path(array_path), array, t[1][3])]
                log.warning("%s: resuming descriptors/%s, %d of %d chunks left", path, name,
                            len(todo) if descriptor.blockwise else len(new), len(grid_blocks(grid, sizes)))
                new = todo
            jobs.append((path, partial, slice(len(tasks), len(tasks) + len(new)), grid, n_features))
            tasks.extend(new)
        unit = "chunk" if descriptor.blockwise else "snapshot"
        results = run_tasks(
            tasks, client, desc=f"descriptors {name}", unit=unit, progress=progress,
            resources=descriptor.resources,
        )
        out = []
        for path, partial, span, grid, n_features in jobs:
            if path is None:
                out.append(_as_dataarray(_assemble(results[span], grid, chunks, descriptor, n_features), descriptor, name))
                continue
            if partial is not None:
                move_into_place(partial, path / DESCRIPTOR_GROUP / name)
                log.info("%s: wrote descriptors/%s", path, name)
            out.append(open_descriptors(path, name))
    except KeyboardInterrupt:
        # keep what is written: the same call resumes from the missing chunks
        for path, partial, *_ in jobs:
            if partial is not None and partial.exists():
                done, total = interrupted_descriptors(path)[name]
                log.warning("%s: interrupted, %d of %d chunks of descriptors/%s written; run again to resume",
                            path, done, total, name)
        raise
    except BaseException:
        for _, partial, *_ in jobs:
            if partial is not None and partial.exists():
                shutil.rmtree(partial)
        raise
    return out


def _assemble(results: list[np.ndarray], grid, chunks, descriptor: Descriptor, n_features: int) -> np.ndarray:
    """Put block results (in :func:`grid_blocks` order) back into one array."""
    if not descriptor.blockwise:
        return results[0]
    values = np.empty((*grid, n_features))
    for block, part in zip(grid_blocks(grid, _chunk_sizes(grid, chunks)), results):
        values[block] = part
    return values
