"""The SNAP bispectrum of a block of grid points, compiled with numba (no compiler needed:
numba's LLVM ships in its wheel).

Organised the way a CPU core wants it: the Wigner matrices of 16 neighbours at a time and
the contraction of 32 points at a time, one SIMD lane each (loops of constant length LLVM
compiles to full-width vector code), their arrays in L1/L2 cache beside the
Clebsch–Gordan table (≈ 60 kB). Threads share nothing but the read-only
tables: :func:`bispectrum_block` hands tiles of points to a thread pool, and the kernel
releases the GIL.

Per point (the notation of ``bispectrum_torch``'s docstring, LAMMPS's conventions):

1. U^tot (:func:`u_lanes`): for each neighbour within r_c of its element, the rescaled Wigner matrices
   V_j = U_j / D_j by V_j[m', m] = a*·V_{j−1}[m', m] − b*·V_{j−1}[m', m−1] (two complex
   products per entry, rows 2m' ≤ j only), summed with weight f_c(r)·w; then
   U^tot = D ⊙ ΣV + δ (the point itself), the other rows by U's mirror symmetry.
2. B(j1, j2, j) (:mod:`.snap_contraction`) = 2 Re Σ_{rows 2m' ≤ j} conj(U_j[m', m]) Z[m', m], with
   Z[m', m] = Σ_{m1'} C Σ_{m1} C U_j1[m1', m1] U_j2[m2', m2] over the non-zero
   Clebsch–Gordan ranges (LAMMPS's ``compute_zi``/``compute_bi`` loop structure), but
   only for the (j1, j2, j) the features need.

A point's result depends only on its own coordinates and the atoms in the order given,
never on which tile or block it is computed in: chunk results are bit-identical for any
chunking.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

from .snap import bispectrum_indices, clebsch_gordan, u_offsets
from .snap_contraction import LANES, contract_lanes

#: points per thread-pool task: enough to amortise the call, small enough to balance
TILE_POINTS = 256  # a multiple of LANES


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


#: neighbours whose Wigner matrices are built side by side, one SIMD lane each
NEIGHBOUR_LANES = 16


@numba.njit(nogil=True, cache=True)
def row_source(j, mb, m, po):  # pragma: no cover (compiled)
    """Where entry m of P for row (j, mb) comes from in row j − 1: (index, sign, ±1 for conj)."""
    if 2 * mb <= j - 1:
        return po + mb * j + m, 1.0, 1.0
    return po + (j - 1 - mb) * j + (j - 1 - m), 1.0 - 2.0 * ((m + mb) % 2), -1.0


@numba.njit(nogil=True, cache=True)
def previous_row(j, mb, po, vr, vi, pr, pi):  # pragma: no cover (compiled)
    """P = the entries of row j − 1 that row (j, mb) of the recursion reads, at 1 … j of
    ``pr``, ``pi`` (zeros at 0 and j + 1): row mb itself, or the mirror of row j − 1 − mb
    (U's symmetry: ±conj, m reversed)."""
    for lane in range(NEIGHBOUR_LANES):
        pr[0, lane] = pi[0, lane] = pr[j + 1, lane] = pi[j + 1, lane] = 0.0
    for m in range(j):
        src, sign, conj = row_source(j, mb, m, po)
        for lane in range(NEIGHBOUR_LANES):
            pr[m + 1, lane] = sign * vr[src, lane]
            pi[m + 1, lane] = conj * sign * vi[src, lane]


@numba.njit(nogil=True, cache=True)
def next_row(row, j, ar, ai, br, bi, pr, pi, vr, vi):  # pragma: no cover (compiled)
    """Row (j, mb) of V, starting at ``row``, from P (:func:`previous_row`):
    V[ma] = conj(a)·P[ma] − conj(b)·P[ma − 1], one branch-free loop thanks to P's padding."""
    for ma in range(j + 1):
        for lane in range(NEIGHBOUR_LANES):
            vr[row + ma, lane] = ((ar[lane] * pr[ma + 1, lane] + ai[lane] * pi[ma + 1, lane])
                                  - (br[lane] * pr[ma, lane] + bi[lane] * pi[ma, lane]))
            vi[row + ma, lane] = ((ar[lane] * pi[ma + 1, lane] - ai[lane] * pr[ma + 1, lane])
                                  - (br[lane] * pi[ma, lane] - bi[lane] * pr[ma, lane]))


@numba.njit(nogil=True, cache=True)
def wigner_rows(twojmax, off, ar, ai, br, bi, vr, vi, pr, pi):  # pragma: no cover (compiled)
    """V_j of the lanes' neighbours, rows 2m' ≤ j of every j ≤ twojmax (V_0 = 1), into vr, vi."""
    for lane in range(NEIGHBOUR_LANES):
        vr[0, lane] = 1.0
        vi[0, lane] = 0.0
    for j in range(1, twojmax + 1):
        for mb in range(j // 2 + 1):
            previous_row(j, mb, off[j - 1], vr, vi, pr, pi)
            next_row(off[j] + mb * (j + 1), j, ar, ai, br, bi, pr, pi, vr, vi)


@numba.njit(nogil=True, cache=True)
def _u_sum(cayley, weight, count, twojmax, off, vr, vi, pr, pi, accr, acci, ur, ui):  # pragma: no cover (compiled)
    """Σ_n w_n V_j(n) (rows 2m' ≤ j) over the ``count`` neighbours whose Cayley–Klein
    parameters (a_r, a_i, b_r, b_i) are the rows of ``cayley``, into ur, ui.

    NEIGHBOUR_LANES neighbours at a time, one lane each: V_j[m', m] = a*·V_{j−1}[m', m]
    − b*·V_{j−1}[m', m−1] in branch-free loops over the lanes (:func:`previous_row`,
    :func:`next_row`). Each lane sums its own neighbours (n = lane, lane + L, …) and the lanes are added
    in order at the end: the order depends only on the point's neighbour list."""
    L = NEIGHBOUR_LANES
    size = off[twojmax + 1]
    accr[:size] = 0.0
    acci[:size] = 0.0
    ar = np.empty(L)
    ai = np.empty(L)
    br = np.empty(L)
    bi = np.empty(L)
    w = np.empty(L)
    for start in range(0, count, L):
        for lane in range(L):
            n = start + lane
            if n < count:
                ar[lane], ai[lane], br[lane], bi[lane] = cayley[n, 0], cayley[n, 1], cayley[n, 2], cayley[n, 3]
                w[lane] = weight[n]
            else:  # padding: a neighbour of weight 0
                ar[lane], ai[lane], br[lane], bi[lane], w[lane] = 1.0, 0.0, 0.0, 0.0, 0.0
        wigner_rows(twojmax, off, ar, ai, br, bi, vr, vi, pr, pi)
        for j in range(twojmax + 1):
            for k in range(off[j], off[j] + (j // 2 + 1) * (j + 1)):  # the stored rows
                for lane in range(L):
                    accr[k, lane] += w[lane] * vr[k, lane]
                    acci[k, lane] += w[lane] * vi[k, lane]
    for k in range(size):
        tr = 0.0
        ti = 0.0
        for lane in range(L):
            tr += accr[k, lane]
            ti += acci[k, lane]
        ur[k] = tr
        ui[k] = ti


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
def neighbours(point, positions, cut, weight, rfac0, rmin0, switchflag, cayley, switched, index,
               dcayley, dswitched, derivatives):  # pragma: no cover (compiled)
    """The atoms within r_c of ``point``: their Cayley–Klein parameters (a_r, a_i, b_r,
    b_i) into ``cayley``, switched weights into ``switched``, their rows in ``positions``
    into ``index``; with ``derivatives``, also ∂/∂(x, y, z) of both, where (x, y, z) =
    point − atom. Returns how many."""
    count = 0
    for n in range(positions.shape[0]):
        x = point[0] - positions[n, 0]
        y = point[1] - positions[n, 1]
        z = point[2] - positions[n, 2]
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
        switch = switchflag and r > rmin0
        if switch:
            s *= 0.5 * (math.cos((r - rmin0) * math.pi / span) + 1.0)
        cayley[count, 0] = z0 * r0inv
        cayley[count, 1] = -z * r0inv
        cayley[count, 2] = y * r0inv
        cayley[count, 3] = -x * r0inv
        switched[count] = s
        index[count] = n
        if derivatives:
            sin0 = math.sin(theta0)
            dz0 = 1.0 / math.tan(theta0) - r * rfac0 * math.pi / span / (sin0 * sin0)
            ds = -weight[n] * 0.5 * math.sin((r - rmin0) * math.pi / span) * math.pi / span if switch else 0.0
            for k in range(3):
                u = (x, y, z)[k] / r  # ∂r/∂x_k
                dr0inv = -r0inv * r0inv * r0inv * (r + z0 * dz0) * u
                dcayley[count, 0, k] = dz0 * u * r0inv + z0 * dr0inv
                dcayley[count, 1, k] = -z * dr0inv - (r0inv if k == 2 else 0.0)
                dcayley[count, 2, k] = y * dr0inv + (r0inv if k == 1 else 0.0)
                dcayley[count, 3, k] = -x * dr0inv - (r0inv if k == 0 else 0.0)
                dswitched[count, k] = ds * u
        count += 1
    return count


@numba.njit(nogil=True, cache=True)
def u_lanes(points, start, positions, cut, weight, twojmax, rfac0, rmin0, switchflag, off, scale,
            lanes_r, lanes_i):  # pragma: no cover (compiled)
    """U^tot of points start … start + LANES − 1 into the columns of lanes_r, lanes_i
    (past the last point: an isolated point's, whose results are dropped). Its work
    arrays are allocated per call: a few µs beside the milliseconds of 32 points."""
    size = off[twojmax + 1]
    ur = np.empty(size)
    ui = np.empty(size)
    vr = np.empty((size, NEIGHBOUR_LANES))
    vi = np.empty((size, NEIGHBOUR_LANES))
    accr = np.empty((size, NEIGHBOUR_LANES))
    acci = np.empty((size, NEIGHBOUR_LANES))
    pr = np.empty((twojmax + 2, NEIGHBOUR_LANES))  # the previous row, zero-padded at both ends
    pi = np.empty((twojmax + 2, NEIGHBOUR_LANES))
    cayley = np.empty((positions.shape[0], 4))
    switched = np.empty(positions.shape[0])
    index = np.empty(positions.shape[0], dtype=np.int64)
    no_derivatives = np.empty((0, 4, 3))
    no_switch_derivatives = np.empty((0, 3))
    for t in range(LANES):
        p = start + t
        count = 0
        if p < points.shape[0]:
            count = neighbours(points[p], positions, cut, weight, rfac0, rmin0, switchflag, cayley, switched,
                               index, no_derivatives, no_switch_derivatives, False)
        _u_sum(cayley, switched, count, twojmax, off, vr, vi, pr, pi, accr, acci, ur, ui)
        _finish_u(twojmax, off, scale, ur, ui)
        lanes_r[:, t] = ur
        lanes_i[:, t] = ui


@numba.njit(nogil=True, cache=True)
def bispectrum_points(points, positions, cut, weight, twojmax, rfac0, rmin0, switchflag,
                      off, scale, cg, cg_start, features, out):  # pragma: no cover (compiled)
    """Bispectrum components of ``points`` (n, 3) into ``out`` (n, n_features) from the
    atoms at ``positions`` (periodic images included) with per-atom cutoff and weight:
    U^tot point by point, then the contraction LANES points at a time (the last group
    padded with isolated points, whose results are dropped)."""
    size = off[twojmax + 1]
    lanes_r = np.empty((size, LANES))
    lanes_i = np.empty((size, LANES))
    result = np.empty((LANES, features.shape[0]))
    n_points = points.shape[0]
    no_seed = np.empty((0, 0))
    no_adjoint = np.empty((0, 0))
    for start in range(0, n_points, LANES):
        u_lanes(points, start, positions, cut, weight, twojmax, rfac0, rmin0, switchflag, off, scale, lanes_r, lanes_i)
        contract_lanes(features, off, cg, cg_start, lanes_r, lanes_i, result, no_seed, no_adjoint, no_adjoint, False)
        stop = min(start + LANES, n_points)
        out[start:stop] = result[: stop - start]


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
