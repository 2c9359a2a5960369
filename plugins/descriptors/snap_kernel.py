"""The SNAP bispectrum of a block of grid points, compiled with numba (no compiler needed:
numba's LLVM ships in its wheel).

Organised the way a CPU core wants it: one grid point at a time, everything it needs in
cache — its U^tot (Σ (j+1)² complex numbers, 8 kB at twojmax 10), one neighbour's
Wigner matrices, the Clebsch–Gordan table (≈ 60 kB) — and the arithmetic in plain loops
LLVM compiles to scalar or vector code. Threads share nothing but the read-only
tables: :func:`bispectrum_block` hands tiles of points to a thread pool, and the kernel
releases the GIL.

Per point (the notation of ``bispectrum_torch``'s docstring, LAMMPS's conventions):

1. U^tot: for each neighbour within r_c of its element, the rescaled Wigner matrices
   V_j = U_j / D_j by V_j[m', m] = a*·V_{j−1}[m', m] − b*·V_{j−1}[m', m−1] (two complex
   products per entry, rows 2m' ≤ j only), summed with weight f_c(r)·w; then
   U^tot = D ⊙ ΣV + δ (the point itself), the other rows by U's mirror symmetry.
2. B(j1, j2, j) = 2 Re Σ_{rows 2m' ≤ j} conj(U_j[m', m]) Z[m', m], with
   Z[m', m] = Σ_{m1'} C Σ_{m1} C U_j1[m1', m1] U_j2[m2', m2] over the non-zero
   Clebsch–Gordan ranges (LAMMPS's ``compute_zi``/``compute_bi`` loop structure), but
   only for the (j1, j2, j) the features need.

A point's result depends only on its own coordinates and the atoms in the order given,
never on which tile or block it is computed in: chunk results are bit-identical for any
chunking.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

from .snap import bispectrum_indices, clebsch_gordan, u_offsets

#: points per thread-pool task: enough to amortise the call, small enough to balance
TILE_POINTS = 256


@dataclass(frozen=True)
class Tables:
    """Read-only integer and coefficient tables of one twojmax."""

    twojmax: int
    offsets: np.ndarray  # start of U_j in the flat (row-major) array of all U_j, j = 0…twojmax+1
    scale: np.ndarray  # D_j[m', m] for rows 2m' ≤ j (flat, U layout; 0 elsewhere)
    cg: np.ndarray  # Clebsch–Gordan blocks, C(j1 m1, j2 m2 | j m) at m1·(j2+1) + m2
    cg_start: np.ndarray  # (twojmax+1)³: where the block of (j1, j2, j) starts, −1 if none
    features: np.ndarray  # (n_features, 3): (j1, j2, j), LAMMPS's order


@cache
def tables(twojmax: int) -> Tables:
    off = np.array(u_offsets(twojmax), dtype=np.int64)
    scale = np.zeros(off[-1])
    for j in range(twojmax + 1):
        f = [math.factorial(k) for k in range(j + 1)]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                scale[off[j] + mb * (j + 1) + ma] = math.sqrt(f[j - ma] * f[ma] / (f[j - mb] * f[mb]))
    features = np.array(bispectrum_indices(twojmax), dtype=np.int64).reshape(-1, 3)
    cg_start = np.full((twojmax + 1,) * 3, -1, dtype=np.int64)
    cg: list[float] = []
    for j1, j2, j in {(j1, j2, j) for j1, j2, j in features.tolist()}:
        cg_start[j1, j2, j] = len(cg)
        for m1 in range(j1 + 1):
            for m2 in range(j2 + 1):
                m = (2 * m1 - j1 + 2 * m2 - j2 + j) // 2
                cg.append(clebsch_gordan(j1, 2 * m1 - j1, j2, 2 * m2 - j2, j, 2 * m - j) if 0 <= m <= j else 0.0)
    return Tables(twojmax, off, scale, np.array(cg), cg_start, features)


@numba.njit(nogil=True, cache=True)
def _add_neighbour(ar, ai, br, bi, s, twojmax, off, vr, vi, ur, ui):  # pragma: no cover (compiled)
    """V_j (rows 2m' ≤ j) of one neighbour into vr, vi; s·V added to ur, ui."""
    vr[0] = 1.0
    vi[0] = 0.0
    ur[0] += s
    for j in range(1, twojmax + 1):
        jo, po = off[j], off[j - 1]
        for mb in range(j // 2 + 1):
            mirrored = 2 * mb > j - 1  # row j/2 of V_{j−1} (j even) is past its stored half
            for ma in range(j + 1):
                re = 0.0
                im = 0.0
                if ma < j:  # conj(a)·V_{j−1}[mb, ma]
                    if mirrored:
                        k = po + (j - 1 - mb) * j + (j - 1 - ma)
                        sign = 1.0 - 2.0 * ((ma + mb) % 2)
                        pr, pi = sign * vr[k], -sign * vi[k]
                    else:
                        k = po + mb * j + ma
                        pr, pi = vr[k], vi[k]
                    re += ar * pr + ai * pi
                    im += ar * pi - ai * pr
                if ma > 0:  # − conj(b)·V_{j−1}[mb, ma − 1]
                    if mirrored:
                        k = po + (j - 1 - mb) * j + (j - ma)
                        sign = 1.0 - 2.0 * ((ma - 1 + mb) % 2)
                        pr, pi = sign * vr[k], -sign * vi[k]
                    else:
                        k = po + mb * j + ma - 1
                        pr, pi = vr[k], vi[k]
                    re -= br * pr + bi * pi
                    im -= br * pi - bi * pr
                k = jo + mb * (j + 1) + ma
                vr[k] = re
                vi[k] = im
                ur[k] += s * re
                ui[k] += s * im


@numba.njit(nogil=True, cache=True)
def _finish_u(twojmax, off, scale, ur, ui):  # pragma: no cover (compiled)
    """U^tot = D ⊙ ΣV + δ on rows 2m' ≤ j, the others by U_j[m', m] = (−1)^(m+m') conj(U_j[j−m', j−m])."""
    for j in range(twojmax + 1):
        jo = off[j]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                k = jo + mb * (j + 1) + ma
                ur[k] *= scale[k]
                ui[k] *= scale[k]
                if ma == mb:
                    ur[k] += 1.0
        for mb in range(j // 2 + 1, j + 1):
            for ma in range(j + 1):
                k = jo + mb * (j + 1) + ma
                src = jo + (j - mb) * (j + 1) + (j - ma)
                sign = 1.0 - 2.0 * ((ma + mb) % 2)
                ur[k] = sign * ur[src]
                ui[k] = -sign * ui[src]


@numba.njit(nogil=True, cache=True)
def _z(j1, j2, j, ma, mb, off, cg, c0, ur, ui):  # pragma: no cover (compiled)
    """Z(j1, j2, j)[mb, ma] = Σ C(mb1, mb2) Σ C(ma1, ma2) U_j1[mb1, ma1] U_j2[mb2, ma2]."""
    ma1min = max(0, (2 * ma - j - j2 + j1) // 2)
    ma2max = (2 * ma - j - (2 * ma1min - j1) + j2) // 2
    na = min(j1, (2 * ma - j + j2 + j1) // 2) - ma1min + 1
    mb1min = max(0, (2 * mb - j - j2 + j1) // 2)
    mb2max = (2 * mb - j - (2 * mb1min - j1) + j2) // 2
    nb = min(j1, (2 * mb - j + j2 + j1) // 2) - mb1min + 1
    u1 = off[j1] + (j1 + 1) * mb1min
    u2 = off[j2] + (j2 + 1) * mb2max
    icgb = c0 + mb1min * (j2 + 1) + mb2max
    zr = 0.0
    zi = 0.0
    for _ in range(nb):
        # two partial sums (even and odd terms): half the dependency chain of one
        sr0 = 0.0
        si0 = 0.0
        sr1 = 0.0
        si1 = 0.0
        k1 = u1 + ma1min
        k2 = u2 + ma2max
        icga = c0 + ma1min * (j2 + 1) + ma2max
        for _ in range(na // 2):
            c = cg[icga]
            sr0 += c * (ur[k1] * ur[k2] - ui[k1] * ui[k2])
            si0 += c * (ur[k1] * ui[k2] + ui[k1] * ur[k2])
            c = cg[icga + j2]
            sr1 += c * (ur[k1 + 1] * ur[k2 - 1] - ui[k1 + 1] * ui[k2 - 1])
            si1 += c * (ur[k1 + 1] * ui[k2 - 1] + ui[k1 + 1] * ur[k2 - 1])
            k1 += 2
            k2 -= 2
            icga += 2 * j2
        if na % 2:
            c = cg[icga]
            sr0 += c * (ur[k1] * ur[k2] - ui[k1] * ui[k2])
            si0 += c * (ur[k1] * ui[k2] + ui[k1] * ur[k2])
        zr += cg[icgb] * (sr0 + sr1)
        zi += cg[icgb] * (si0 + si1)
        u1 += j1 + 1
        u2 -= j2 + 1
        icgb += j2
    return zr, zi


@numba.njit(nogil=True, cache=True)
def _bispectrum(features, off, cg, cg_start, ur, ui, out):  # pragma: no cover (compiled)
    """B of one point from its U^tot, into ``out`` (n_features)."""
    for f in range(features.shape[0]):
        j1, j2, j = features[f, 0], features[f, 1], features[f, 2]
        c0 = cg_start[j1, j2, j]
        jo = off[j]
        total = 0.0
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:  # the middle row of even j: its mirror half
                    break
                zr, zi = _z(j1, j2, j, ma, mb, off, cg, c0, ur, ui)
                k = jo + mb * (j + 1) + ma
                term = ur[k] * zr + ui[k] * zi
                total += 0.5 * term if 2 * mb == j and ma == mb else term
        out[f] = 2.0 * total


@numba.njit(nogil=True, cache=True)
def bispectrum_points(points, positions, cut, weight, twojmax, rfac0, rmin0, switchflag,
                      off, scale, cg, cg_start, features, out):  # pragma: no cover (compiled)
    """Bispectrum components of ``points`` (n, 3) into ``out`` (n, n_features) from the
    atoms at ``positions`` (periodic images included) with per-atom cutoff and weight."""
    size = off[twojmax + 1]
    ur = np.empty(size)
    ui = np.empty(size)
    vr = np.empty(size)
    vi = np.empty(size)
    for p in range(points.shape[0]):
        ur[:] = 0.0
        ui[:] = 0.0
        for n in range(positions.shape[0]):
            x = points[p, 0] - positions[n, 0]
            y = points[p, 1] - positions[n, 1]
            z = points[p, 2] - positions[n, 2]
            r2 = x * x + y * y + z * z
            rc = cut[n]
            if r2 >= rc * rc or r2 <= 1e-20:
                continue
            r = math.sqrt(r2)
            span = rc - rmin0
            theta0 = (r - rmin0) * rfac0 * math.pi / span
            z0 = r / math.tan(theta0)
            r0inv = 1.0 / math.sqrt(r2 + z0 * z0)
            s = weight[n]
            if switchflag and r > rmin0:
                s *= 0.5 * (math.cos((r - rmin0) * math.pi / span) + 1.0)
            _add_neighbour(z0 * r0inv, -z * r0inv, y * r0inv, -x * r0inv, s, twojmax, off, vr, vi, ur, ui)
        _finish_u(twojmax, off, scale, ur, ui)
        _bispectrum(features, off, cg, cg_start, ur, ui, out[p])


def bispectrum_block(points: np.ndarray, positions: np.ndarray, cut: np.ndarray, weight: np.ndarray,
                     twojmax: int, rfac0: float, rmin0: float, switchflag: int, threads: int = 1) -> np.ndarray:
    """Bispectrum components (n_points, n_features) on ``threads`` threads (tiles of
    :data:`TILE_POINTS` points; the result does not depend on the number of threads)."""
    t = tables(twojmax)
    points = np.ascontiguousarray(points, dtype=np.float64)
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cut = np.ascontiguousarray(cut, dtype=np.float64)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    out = np.empty((len(points), len(t.features)))

    def tile(start: int) -> None:
        stop = start + TILE_POINTS
        bispectrum_points(points[start:stop], positions, cut, weight, twojmax, float(rfac0), float(rmin0),
                          int(switchflag), t.offsets, t.scale, t.cg, t.cg_start, t.features, out[start:stop])

    starts = range(0, len(points), TILE_POINTS)
    threads = max(1, min(int(threads), len(starts)))
    if threads == 1:
        for start in starts:
            tile(start)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(tile, starts))
    return out


def default_threads() -> int:
    """Threads a kernel call may use outside Dask: $MALAFLOW_THREADS, else every core."""
    return int(os.environ.get("MALAFLOW_THREADS", os.cpu_count() or 1))
