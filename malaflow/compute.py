"""Running descriptor plugins over snapshots: lazy arrays, Dask tasks, Zarr stores.

:func:`descriptor_grid` gives a lazy dask array (for a prediction on a new structure);
:func:`compute_descriptors` computes into a snapshot store. There each task computes
one chunk (blockwise plugins) or one whole snapshot (LAMMPS) and writes its own Zarr
chunks, so nothing travels back to the client and a lost worker only costs its task.
How the array is built and resumed in the store is :mod:`malaflow.descriptor_store`'s.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .descriptor_store import chunk_written, descriptor_lock, interrupted_descriptors, open_partial, stored_match
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
from .runtime import run_tasks
from .atomic import move_into_place
from .grid import Chunks, spatial_chunks, SPATIAL_DIMS
from .store import DESCRIPTOR_GROUP, open_descriptors, open_snapshot

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
    return descriptor.as_dataarray(values)


# --------------------------------------------------------------------------- tasks


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


def _regions(descriptor: Descriptor, grid: tuple[int, int, int], sizes: tuple[int, int, int]) -> list:
    """The region of each task: every chunk for blockwise plugins, else None (the whole grid)."""
    return list(grid_blocks(grid, sizes)) if descriptor.blockwise else [None]


@dataclass
class _Job:
    """One source's share of the tasks: results[span], to be assembled or moved into place."""

    path: Path | None  # the store, None for an in-memory source
    partial: Path | None  # the hidden group being filled, None on a cache hit or in memory
    span: slice
    grid: tuple[int, int, int]
    n_features: int


# --------------------------------------------------------------------------- stores


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


def _compute(items: list, descriptor: Descriptor, name: str, grid_shape, chunks, batch_points, dtype, overwrite: bool,
             client: Any, progress: bool) -> list[xr.DataArray]:
    """compute_descriptors with the stores locked."""
    tasks: list[tuple[Callable[..., Any], tuple]] = []
    jobs: list[_Job] = []
    try:
        for source in items:
            structure, grid, path = _resolve(source, grid_shape)
            sizes = _chunk_sizes(grid, chunks)
            n_features = descriptor.n_features(structure)
            partial = None
            regions = _regions(descriptor, grid, sizes)
            if path is not None:
                match = stored_match(path, descriptor)
                if match == "same" and not overwrite:
                    log.info("%s: descriptors/%s present with equal parameters — cache hit", path, name)
                    jobs.append(_Job(path, None, slice(0, 0), grid, n_features))
                    continue
                if match == "different" and not overwrite:
                    raise StoreError(
                        f"{path}: descriptors/{name} was computed with other parameters "
                        f"({open_descriptors(path, name).attrs.get('params')}); "
                        "replace it with overwrite=True (--overwrite at the command line)"
                    )
                partial, resumed = open_partial(path, descriptor, structure, grid, sizes, dtype)
                if resumed and descriptor.blockwise:
                    array = zarr.open_array(str(partial / name), mode="r")
                    regions = [r for r in regions if not chunk_written(partial / name, array, r)]
                    log.warning("%s: resuming descriptors/%s, %d of %d chunks left", path, name,
                                len(regions), len(grid_blocks(grid, sizes)))
            array_path = None if partial is None else str(partial / name)
            jobs.append(_Job(path, partial, slice(len(tasks), len(tasks) + len(regions)), grid, n_features))
            tasks += [(_compute_region, (descriptor, structure, grid, r, batch_points, array_path)) for r in regions]
        unit = "chunk" if descriptor.blockwise else "snapshot"
        results = run_tasks(
            tasks, client, desc=f"descriptors {name}", unit=unit, progress=progress,
            resources=descriptor.resources,
        )
        out = []
        for job in jobs:
            if job.path is None:
                values = _assemble(results[job.span], job.grid, chunks, descriptor, job.n_features)
                out.append(descriptor.as_dataarray(values))
                continue
            if job.partial is not None:
                move_into_place(job.partial, job.path / DESCRIPTOR_GROUP / name)
                log.info("%s: wrote descriptors/%s", job.path, name)
            out.append(open_descriptors(job.path, name))
    except KeyboardInterrupt:
        # keep what is written: the same call resumes from the missing chunks
        for job in jobs:
            if job.partial is not None and job.partial.exists():
                done, total = interrupted_descriptors(job.path)[name]
                log.warning("%s: interrupted, %d of %d chunks of descriptors/%s written; run again to resume",
                            job.path, done, total, name)
        raise
    except BaseException:
        for job in jobs:
            if job.partial is not None and job.partial.exists():
                shutil.rmtree(job.partial)
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
