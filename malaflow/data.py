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
    ) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be ≥ 1, got {batch_size}")
        self.pairs = list(pairs)
        self.x_scaler, self.y_scaler = x_scaler, y_scaler
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.buffer_points, self.seed = int(buffer_points), int(seed)
        n_in, n_out = self.pairs[0].inputs.shape[3], self.pairs[0].outputs.shape[3]
        self.n_points = sum(p.n_points for p in self.pairs)
        size_mb = self.n_points * (n_in + n_out) * 4 / 2**20
        self.cached = size_mb <= cache_mb
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        log.info("%d points (%.0f MB scaled): %s", self.n_points, size_mb, "cached in memory" if self.cached else "streamed")

    def _scaled(self, pair: SnapshotPair, block) -> tuple[np.ndarray, np.ndarray]:
        x, y = pair.read(block)
        return (self.x_scaler.transform(x).astype(np.float32), self.y_scaler.transform(y).astype(np.float32))

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            parts = [self._scaled(p, b) for p in self.pairs for b in p.blocks]
            self._cache = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        return self._cache

    def __len__(self) -> int:
        """Batches per epoch (the last may be smaller)."""
        return -(-self.n_points // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        if self.cached:
            x, y = self._all()
            order = rng.permutation(len(x)) if self.shuffle else np.arange(len(x))
            for start in range(0, len(x), self.batch_size):
                idx = order[start : start + self.batch_size]
                yield x[idx], y[idx]
            return
        yield from self._stream(rng)

    def _stream(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        blocks = [(p, b) for p in self.pairs for b in p.blocks]
        order = rng.permutation(len(blocks)) if self.shuffle else np.arange(len(blocks))
        held_x: list[np.ndarray] = []
        held_y: list[np.ndarray] = []
        held = 0
        for k, i in enumerate(order):
            x, y = self._scaled(*blocks[i])
            held_x.append(x)
            held_y.append(y)
            held += len(x)
            if held < self.buffer_points and k < len(order) - 1:
                continue
            bx, by = np.concatenate(held_x), np.concatenate(held_y)
            if self.shuffle:
                perm = rng.permutation(len(bx))
                bx, by = bx[perm], by[perm]
            last = k == len(order) - 1
            cut = len(bx) if last else len(bx) - len(bx) % self.batch_size
            for start in range(0, cut, self.batch_size):
                yield bx[start : start + self.batch_size], by[start : start + self.batch_size]
            held_x, held_y = [bx[cut:]], [by[cut:]]  # a partial batch waits for the next blocks
            held = len(bx) - cut

