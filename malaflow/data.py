"""Training data straight from snapshot stores: scalers and a streaming batch loader.

Inputs are a descriptor array, outputs the LDOS, both (x, y, z, ·) in Zarr. The loader
reads one spatial block of both at a time, in a seeded random block order, mixes a
few blocks in a shuffle buffer and cuts it into minibatches — so memory is bounded by
the buffer, not the dataset. A dataset smaller than ``cache_mb`` is read once and kept
in memory (then every epoch is a full random permutation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from .descriptors import grid_blocks
from .errors import MalaflowError, ParameterError, StoreError
from .store import open_descriptors, open_snapshot

log = logging.getLogger(__name__)

SCALINGS = ("standard", "minmax", "global-standard", "global-minmax", "none")


# --------------------------------------------------------------------------- scalers


@dataclass
class Scaler:
    """x → (x − shift) / scale, per feature (``standard``, ``minmax``) or with one number
    for all features (``global-…``), or the identity (``none``)."""

    kind: str
    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, kind: str, arrays: Sequence[da.Array]) -> Scaler:
        """Statistics over the rows of (n, features) dask arrays, in one pass."""
        if kind not in SCALINGS:
            raise ParameterError(f"unknown scaling {kind!r}; choose one of {', '.join(SCALINGS)}")
        x = da.concatenate([a.astype(np.float64) for a in arrays], axis=0)
        n_features = x.shape[1]
        if kind == "none":
            return cls(kind, np.zeros(n_features), np.ones(n_features))
        axis = 0 if not kind.startswith("global") else None
        if kind.endswith("standard"):
            mean, sq = dask.compute(x.mean(axis=axis), (x * x).mean(axis=axis))
            shift, scale = mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))
        else:
            lo, hi = dask.compute(x.min(axis=axis), x.max(axis=axis))
            shift, scale = lo, hi - lo
        shift = np.broadcast_to(shift, (n_features,)).astype(float)
        scale = np.broadcast_to(scale, (n_features,)).astype(float)
        scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays constant
        return cls(kind, shift.copy(), scale.copy())

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift) / self.scale

    def inverse(self, y: Any) -> Any:
        return y * self.scale + self.shift

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        return cls(d["kind"], np.asarray(d["shift"], dtype=float), np.asarray(d["scale"], dtype=float))


# --------------------------------------------------------------------------- pairs


def feature_range(arrays: Sequence[da.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and maximum over the rows of (n, features) dask arrays: the
    region of descriptor space a model has seen."""
    x = da.concatenate([a.astype(np.float64) for a in arrays], axis=0)
    lo, hi = dask.compute(x.min(axis=0), x.max(axis=0))
    return np.asarray(lo), np.asarray(hi)


@dataclass
class SnapshotPair:
    """Descriptors and LDOS of one snapshot as lazy (x, y, z, ·) arrays, and the blocks
    (spatial regions) the loader reads one at a time."""

    store: Path
    inputs: da.Array
    outputs: da.Array
    blocks: list[tuple[slice, slice, slice]]

    @classmethod
    def open(cls, store: str | Path, descriptor: str, target: str) -> SnapshotPair:
        store = Path(store)
        ds = open_snapshot(store)
        if target not in ds:
            raise StoreError(f"{store}: no {target!r} array to train on")
        x = open_descriptors(store, descriptor).data
        y = ds[target].data
        if x.shape[:3] != y.shape[:3]:
            raise StoreError(
                f"{store}: descriptors/{descriptor} has grid {x.shape[:3]}, {target} has {y.shape[:3]}"
            )
        # read along the target's (stored, regular) chunks: the bigger array
        blocks = grid_blocks(tuple(y.shape[:3]), tuple(c[0] for c in y.chunks[:3]))
        return cls(store, x, y, blocks)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.inputs.shape[:3]))

    def flat(self) -> tuple[da.Array, da.Array]:
        """(points, features) and (points, energies) views, for statistics."""
        return (self.inputs.reshape(-1, self.inputs.shape[3]), self.outputs.reshape(-1, self.outputs.shape[3]))

    def read(self, block: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        x, y = dask.compute(self.inputs[block], self.outputs[block], scheduler="synchronous")
        return x.reshape(-1, x.shape[3]), y.reshape(-1, y.shape[3])


def open_pairs(stores: Sequence[str | Path], descriptor: str, target: str) -> list[SnapshotPair]:
    """Descriptor and target arrays (``target``: the dataset variable) of each store."""
    pairs = [SnapshotPair.open(s, descriptor, target) for s in stores]
    if not pairs:
        raise MalaflowError("no snapshots selected")
    sizes = {(p.inputs.shape[3], p.outputs.shape[3]) for p in pairs}
    if len(sizes) > 1:
        raise StoreError(f"the snapshots disagree on (features, energies): {sorted(sizes)}")
    return pairs


# --------------------------------------------------------------------------- loader


class BatchLoader:
    """Scaled minibatches (numpy float32) from snapshot pairs, epoch by epoch.

    Epoch ``e`` draws its block order and permutations from ``seed`` and ``e`` alone, so
    a run resumed at epoch e sees exactly the batches an uninterrupted run would.

    Data-parallel training: replica ``rank`` of ``replicas`` reads only the blocks it
    owns (a disjoint shard) and yields, of every global batch, the points that come
    from them. The permutations depend on the block sizes only, never on the data or on
    ``replicas``, so the global batches — and with a loss scaled by the global batch
    size, the gradients summed over replicas — are those of a single process.

    ``bootstrap``: train on a resample of the points drawn from this seed — each point
    taken k times, k ~ Poisson(1) drawn per block from (seed, block), so that a block's
    resample needs no other block's (streaming) and the data set's size is still known
    up front (an ensemble's members then see different data: bagging).
    """

    def __init__(
        self,
        pairs: Sequence[SnapshotPair],
        x_scaler: Scaler,
        y_scaler: Scaler,
        batch_size: int,
        shuffle: bool = True,
        buffer_points: int = 200_000,
        cache_mb: float = 1024.0,
        seed: int = 0,
        rank: int = 0,
        replicas: int = 1,
        bootstrap: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < replicas:
            raise ParameterError(f"replica {rank} of {replicas} does not exist")
        self.pairs = list(pairs)
        self.x_scaler, self.y_scaler = x_scaler, y_scaler
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.buffer_points, self.seed = int(buffer_points), int(seed)
        self.rank, self.replicas = rank, replicas
        self.blocks = [(p, b) for p in self.pairs for b in p.blocks]
        self.bootstrap = bootstrap
        self.sizes = np.array([int(np.prod([s.stop - s.start for s in b])) for _, b in self.blocks])
        if bootstrap is not None:
            self.sizes = np.array([int(self._counts(i).sum()) for i in range(len(self.blocks))])
        self.widths = (self.pairs[0].inputs.shape[3], self.pairs[0].outputs.shape[3])
        self.n_points = int(self.sizes.sum())
        size_mb = self.n_points * sum(self.widths) * 4 / 2**20
        self.cached = size_mb <= cache_mb  # not per replica: the sample order must not depend on their number
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        log.info("%d points (%.0f MB scaled): %s", self.n_points, size_mb, "cached in memory" if self.cached else "streamed")

    def _counts(self, i: int) -> np.ndarray:
        """How often each point of block ``i`` is in the bootstrap resample."""
        _, block = self.blocks[i]
        return np.random.default_rng([self.bootstrap, i]).poisson(1.0, int(np.prod([s.stop - s.start for s in block])))

    def _scaled(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``i``'s points (resampled, with ``bootstrap``), scaled, as float32."""
        x, y = self.blocks[i][0].read(self.blocks[i][1])
        if self.bootstrap is not None:
            counts = self._counts(i)
            x, y = np.repeat(x, counts, axis=0), np.repeat(y, counts, axis=0)
        return (self.x_scaler.transform(x).astype(np.float32), self.y_scaler.transform(y).astype(np.float32))

    def _cached(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This replica's blocks (block j belongs to replica j mod replicas), and for every
        point of the data set its row among them (−1: another replica's)."""
        if self._cache is None:
            own = np.arange(len(self.blocks)) % self.replicas == self.rank
            parts = [self._scaled(i) for i, mine in enumerate(own) if mine]
            self._cache = (*self._stack([x for x, _ in parts], [y for _, y in parts]),
                           _rows(np.repeat(own, self.sizes)))
        return self._cache

    def _stack(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Blocks joined into rows; none (a replica may own none of a fill) give 0 rows."""
        if not xs:
            return tuple(np.zeros((0, w), np.float32) for w in self.widths)
        return np.concatenate(xs), np.concatenate(ys)

    def __len__(self) -> int:
        """Batches per epoch (the last may be smaller)."""
        return -(-self.n_points // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of an epoch (this replica's part of each)."""
        for x, y, _ in self.shard_epoch(epoch):
            yield x, y

    def shard_epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """This replica's part of each batch of an epoch, with the global batch's size."""
        rng = np.random.default_rng([self.seed, epoch])
        if not self.cached:
            yield from self._stream(rng)
            return
        x, y, rows = self._cached()
        order = rng.permutation(self.n_points) if self.shuffle else np.arange(self.n_points)
        for start in range(0, self.n_points, self.batch_size):
            batch = order[start : start + self.batch_size]
            mine = rows[batch]
            mine = mine[mine >= 0]
            yield x[mine], y[mine], len(batch)

    def _stream(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Blocks in a random order fill a shuffle buffer; when it holds ``buffer_points``
        it is permuted and cut into batches, a partial batch waiting for the next fill. The
        k-th block of the epoch belongs to replica k mod replicas, so every fill is shared."""
        order = rng.permutation(len(self.blocks)) if self.shuffle else np.arange(len(self.blocks))
        held_x: list[np.ndarray] = []
        held_y: list[np.ndarray] = []
        held_own: list[np.ndarray] = []  # per held point: is it this replica's?
        held = 0
        for k, i in enumerate(order):
            mine = k % self.replicas == self.rank
            if mine:
                x, y = self._scaled(i)
                held_x.append(x)
                held_y.append(y)
            held_own.append(np.full(self.sizes[i], mine))
            held += self.sizes[i]
            last = k == len(order) - 1
            if held < self.buffer_points and not last:
                continue
            bx, by = self._stack(held_x, held_y)
            own = np.concatenate(held_own)
            perm = rng.permutation(len(own)) if self.shuffle else np.arange(len(own))
            rows = _rows(own)
            cut = len(own) if last else len(own) - len(own) % self.batch_size
            for start in range(0, cut, self.batch_size):
                batch = rows[perm[start : start + self.batch_size]]
                batch = batch[batch >= 0]
                yield bx[batch], by[batch], min(self.batch_size, cut - start)
            rest = perm[cut:]  # a partial batch waits for the next blocks
            kept = rows[rest][rows[rest] >= 0]
            held_x, held_y, held_own = [bx[kept]], [by[kept]], [own[rest]]
            held = len(rest)


def _rows(own: np.ndarray) -> np.ndarray:
    """For each point, its row among the points marked ``own`` (in order), or −1."""
    return np.where(own, np.cumsum(own) - 1, -1)
