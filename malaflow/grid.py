"""The real-space grid of a snapshot: where its points sit, the volume each stands for,
and how it is cut into chunks (the unit of work for Dask)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .errors import MalaflowError

SPATIAL_DIMS = ("x", "y", "z")
DEFAULT_CHUNK = 32

Chunks = int | Mapping[str, int] | None


def voxel_volume(cell: np.ndarray, grid_shape: tuple[int, int, int]) -> float:
    """Volume in Å³ that one grid point stands for: |det cell| / number of points."""
    return float(abs(np.linalg.det(np.asarray(cell, dtype=float))) / np.prod(grid_shape))


def grid_positions(
    cell: np.ndarray, grid_shape: tuple[int, int, int], indices: np.ndarray
) -> np.ndarray:
    """Cartesian positions (Å) of grid points given by integer indices (n, 3).

    Point (i, j, k) sits at i/nx·a1 + j/ny·a2 + k/nz·a3, the convention of QE's FFT
    grid and of the cube files pp.x writes.
    """
    frac = np.asarray(indices, dtype=float) / np.asarray(grid_shape, dtype=float)
    cell = np.asarray(cell, dtype=float)
    # written out rather than frac @ cell, whose rounding can depend on the array length
    return frac[:, 0:1] * cell[0] + frac[:, 1:2] * cell[1] + frac[:, 2:3] * cell[2]


def spatial_chunks(sizes: Mapping[str, int], chunks: Chunks) -> dict[str, int]:
    """Chunk edge per spatial dim of ``sizes`` ({dim: points}) from a chunk request: an
    int for all three, a mapping for some (the others whole), or None (the default)."""
    if chunks is None:
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, int):
        chunks = {d: chunks for d in SPATIAL_DIMS}
    bad = [d for d in chunks if d not in SPATIAL_DIMS]
    if bad:
        raise MalaflowError(f"chunks may only be given for {SPATIAL_DIMS}, not {bad}")
    out = {}
    for d, n in sizes.items():
        if d in SPATIAL_DIMS:
            c = int(chunks.get(d, n))
            if c < 1:
                raise MalaflowError(f"chunk size for {d!r} must be ≥ 1, got {chunks[d]}")
            out[d] = min(c, int(n))
    return out


def chunk_spec(ds: xr.Dataset | xr.DataArray, chunks: Chunks) -> dict[str, int]:
    """Normalise a chunk request: spatial dims chunked, every other dim whole."""
    return {d: -1 for d in ds.dims} | spatial_chunks(dict(ds.sizes), chunks)
