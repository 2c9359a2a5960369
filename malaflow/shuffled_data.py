"""Pre-shuffled training data (MALA's DataShuffler): the training points of many snapshots
mixed into one new Zarr group, so that streaming reads are sequential and every block
holds points of every snapshot.

An external shuffle in bounded memory, two passes: reading the snapshots block by block,
each point goes to one of B buckets by a seeded random draw (B such that a bucket fits in
``memory_mb``); then each bucket is permuted and written as the next rows of the output.
A uniformly random bucket and a uniform permutation within it make every order of the
points equally likely. Raw (unscaled) values are kept, so scalers fitted on the shuffled
data are those of the snapshots. Training reads it with ``shuffled: PATH`` in its config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from tqdm.auto import tqdm

from .atomic import atomic_directory
from .data import SnapshotPair
from .errors import MalaflowError, StoreError

CHUNK_ROWS = 65_536  # rows per Zarr chunk of the output: one sequential read


def shuffle_training_data(config: Any, output: str | Path, memory_mb: float = 512.0, progress: bool = True) -> Path:
    """Write the training points of ``config`` (a training config), shuffled, to ``output``."""
    from .compute import compute_descriptors
    from .data import open_pairs
    from .descriptors import get_descriptor
    from .targets import get_target
    from .training import TrainingConfig, selected_snapshots

    config = TrainingConfig.load(config)
    selected = selected_snapshots(config)
    descriptor = get_descriptor(config.descriptor["plugin"], config.descriptor.get("params") or {})
    stores = [selected.stores[i] for i in selected.train]
    compute_descriptors(stores, descriptor, progress=progress)
    name, variable = descriptor.store_name(), get_target(config.target).variable
    pairs = open_pairs(stores, name, variable)
    widths = (pairs[0].inputs.shape[3], pairs[0].outputs.shape[3])
    total = sum(p.n_points for p in pairs)
    buckets = max(1, math.ceil(total * sum(widths) * 4 / (memory_mb * 2**20)))
    rng = np.random.default_rng([config.seed, 0x5EED])
    blocks = [(p, b) for p in pairs for b in p.blocks]
    with atomic_directory(output) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        parts = [_bucket(root, k, widths) for k in range(buckets)]
        for pair, block in tqdm(blocks, desc="shuffling: scatter", unit="block", disable=not progress):
            x, y = pair.read(block)
            where = rng.integers(buckets, size=len(x))
            for k in np.unique(where):
                parts[k][0].append(x[where == k].astype(np.float32), axis=0)
                parts[k][1].append(y[where == k].astype(np.float32), axis=0)
        chunks = min(CHUNK_ROWS, total)
        inputs = root.create_array("inputs", shape=(total, widths[0]), chunks=(chunks, widths[0]), dtype="float32")
        outputs = root.create_array("outputs", shape=(total, widths[1]), chunks=(chunks, widths[1]), dtype="float32")
        start = 0
        for k, (bx, by) in enumerate(tqdm(parts, desc="shuffling: gather", unit="bucket", disable=not progress)):
            order = rng.permutation(bx.shape[0])
            inputs[start:start + len(order)] = bx[:][order]
            outputs[start:start + len(order)] = by[:][order]
            start += len(order)
            del root[f"buckets/{k}"]
        del root["buckets"]
        root.attrs.update({"malaflow_shuffled": 1, "descriptor": name, "target": variable, "seed": config.seed,
                           "snapshots": list(selected.train), "n_points": total, "buckets": buckets})
    return Path(output)


def _bucket(root: Any, k: int, widths: tuple[int, int]) -> tuple[Any, Any]:
    group = root.require_group(f"buckets/{k}")
    return tuple(group.create_array(n, shape=(0, w), chunks=(CHUNK_ROWS, w), dtype="float32")
                 for n, w in zip(("x", "y"), widths))


def shuffled_pairs(path: str | Path, descriptor: str, target: str, snapshots: list[str]) -> list[SnapshotPair]:
    """The shuffled points as one :class:`SnapshotPair` (an n × 1 × 1 'grid', read in its
    Zarr chunks), checked against what the training would otherwise read."""
    path = Path(path)
    try:
        root = zarr.open_group(path, mode="r", zarr_format=3)
        attrs = dict(root.attrs)
    except Exception:  # zarr raises several kinds for a folder that is no group
        attrs = {}
    if attrs.get("malaflow_shuffled") != 1:
        raise StoreError(f"{path}: not a shuffled training set (write one with malaflow shuffle CONFIG -o {path})")
    wanted = {"descriptor": descriptor, "target": target, "snapshots": list(snapshots)}
    differing = [k for k, v in wanted.items() if attrs.get(k) != v]
    if differing:
        detail = "; ".join(f"{k}: {attrs.get(k)!r} there, {wanted[k]!r} here" for k in differing)
        raise MalaflowError(f"{path} was shuffled from other training data ({detail}); shuffle again")
    x, y = (da.from_zarr(root[n]) for n in ("inputs", "outputs"))
    rows = x.chunks[0]
    edges = np.concatenate([[0], np.cumsum(rows)])
    blocks = [(slice(int(a), int(b)), slice(0, 1), slice(0, 1)) for a, b in zip(edges[:-1], edges[1:])]
    grid = lambda a: a.reshape(a.shape[0], 1, 1, a.shape[1])  # noqa: E731
    return [SnapshotPair(path, grid(x), grid(y), blocks)]
