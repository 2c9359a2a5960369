"""The pullback of the compiled SNAP bispectrum: for a seed ∂E/∂B at every point,
∂E/∂(atom position) — what forces from descriptors need — compiled with numba, laid out
like :mod:`.snap_kernel`.

Per group of LANES points:

1. U^tot of each point, as the forward kernel computes it.
2. The adjoint of the contraction (LAMMPS's "Y" idea): Ū = Σ_f ∂E/∂B_f · ∂B_f/∂U^tot,
   all points of the group in SIMD lanes. With Z = Σ C C U_j1 U_j2 and B = 2 Re Σ w
   conj(U_j)·Z, one pass recomputes Z and adds 2w ∂E/∂B · Z to Ū_j; a second runs the
   Z loops again and adds, for each product P = f·g with weight c, c Z̄ ∘ g to f̄ and
   c Z̄ ∘ f to ḡ (Z̄ = 2w ∂E/∂B · U_j, products of a complex number with the conjugate
   pattern the real pairs need).
3. Ū folded onto the rows 2m' ≤ j (U's mirror symmetry, transposed) and scaled by D:
   V̄ = D ⊙ Ū, the adjoint of the per-neighbour sum Σ_n s_n V(n).
4. For each neighbour, 16 at a time: the Wigner recursion again, and its reverse sweep
   from V̄ to ∂E/∂(a, b) of the Cayley–Klein parameters, then through ∂a, ∂b/∂(x, y, z)
   (:func:`.snap_kernel.neighbours`): ∂E/∂x_k = Σ V̄ · (s ∂V/∂x_k + ∂s/∂x_k V); the
   atom's gradient is minus that (x = point − atom).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .snap_contraction import LANES, contract_lanes
from .snap_kernel import (NEIGHBOUR_LANES, TILE_POINTS, neighbours, previous_row, row_source, tables, u_lanes,
                          wigner_rows)


@numba.njit(nogil=True, cache=True)
def _fold(twojmax, off, scale, ubr, ubi, t, vbr, vbi):  # pragma: no cover (compiled)
    """V̄ on rows 2m' ≤ j of lane t: the mirrored rows' adjoints added to the rows they
    copy (U[k] = ±conj(U[src])), then × D."""
    for j in range(twojmax + 1):
        jo = off[j]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                k = jo + mb * (j + 1) + ma
                vbr[k] = ubr[k, t]
                vbi[k] = ubi[k, t]
        for mb in range(j // 2 + 1, j + 1):
            for ma in range(j + 1):
                k = jo + mb * (j + 1) + ma
                src = jo + (j - mb) * (j + 1) + (j - ma)
                sign = 1.0 - 2.0 * ((ma + mb) % 2)
                vbr[src] += sign * ubr[k, t]
                vbi[src] -= sign * ubi[k, t]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                k = jo + mb * (j + 1) + ma
                vbr[k] *= scale[k]
                vbi[k] *= scale[k]


@numba.njit(nogil=True, cache=True)
def _neighbour_gradients(cayley, dcayley, switched, dswitched, count, twojmax, off, vbr, vbi,
                         vr, vi, wr, wi, pr, pi, pbr, pbi, grad):  # pragma: no cover (compiled)
    """grad[n, k] = Σ V̄ · ∂(s_n V(n))/∂x_k for the ``count`` neighbours, 16 in lanes, in
    reverse mode: the recursion of ``_u_sum`` forward (values of the rows 2m' ≤ j), then
    backward from row twojmax to row 1, carrying W̄ = ∂(Σ V̄·V)/∂V down the rows and
    collecting ∂/∂(a_r, a_i, b_r, b_i) of the Cayley–Klein parameters, which
    ``dcayley`` turns into ∂/∂(x, y, z). (One backward sweep for the four parameters
    costs less than carrying three derivatives forward.) Since ∂(sV)/∂x = s ∂V/∂x +
    V ∂s/∂x, Σ V̄·V is kept for the switching function's term.

    Each entry is V[ma] = conj(a)·P[ma] − conj(b)·P[ma − 1] (:func:`.snap_kernel.next_row`)."""
    L = NEIGHBOUR_LANES
    ar = np.empty(L)
    ai = np.empty(L)
    br = np.empty(L)
    bi = np.empty(L)
    value = np.empty(L)
    cbar = np.empty((4, L))  # ∂(Σ V̄·V)/∂(a_r, a_i, b_r, b_i)
    for start in range(0, count, L):
        for lane in range(L):
            n = start + lane
            live = n < count
            ar[lane] = cayley[n, 0] if live else 1.0
            ai[lane] = cayley[n, 1] if live else 0.0
            br[lane] = cayley[n, 2] if live else 0.0
            bi[lane] = cayley[n, 3] if live else 0.0
            value[lane] = vbr[0]  # V_0 = 1
            for q in range(4):
                cbar[q, lane] = 0.0
        wigner_rows(twojmax, off, ar, ai, br, bi, vr, vi, pr, pi)  # forward: the values
        for j in range(1, twojmax + 1):
            for k in range(off[j], off[j] + (j // 2 + 1) * (j + 1)):  # the stored rows
                for lane in range(L):
                    value[lane] += vbr[k] * vr[k, lane] + vbi[k] * vi[k, lane]
                    wr[k, lane] = vbr[k]
                    wi[k, lane] = vbi[k]
        for j in range(twojmax, 0, -1):  # backward: W̄ of row j into the parameters and into row j − 1
            jo, po = off[j], off[j - 1]
            for mb in range(j // 2 + 1):
                previous_row(j, mb, po, vr, vi, pr, pi)
                for m in range(j + 2):
                    for lane in range(L):
                        pbr[m, lane] = 0.0
                        pbi[m, lane] = 0.0
                row = jo + mb * (j + 1)
                for ma in range(j + 1):
                    k = row + ma
                    for lane in range(L):
                        gr = wr[k, lane]
                        gi = wi[k, lane]
                        p1r, p1i, p0r, p0i = pr[ma + 1, lane], pi[ma + 1, lane], pr[ma, lane], pi[ma, lane]
                        cbar[0, lane] += gr * p1r + gi * p1i
                        cbar[1, lane] += gr * p1i - gi * p1r
                        cbar[2, lane] -= gr * p0r + gi * p0i
                        cbar[3, lane] -= gr * p0i - gi * p0r
                        pbr[ma + 1, lane] += gr * ar[lane] - gi * ai[lane]
                        pbi[ma + 1, lane] += gr * ai[lane] + gi * ar[lane]
                        pbr[ma, lane] -= gr * br[lane] - gi * bi[lane]
                        pbi[ma, lane] -= gr * bi[lane] + gi * br[lane]
                if j > 1:  # row 0 is the constant 1
                    for m in range(j):
                        src, sign, conj = row_source(j, mb, m, po)
                        for lane in range(L):
                            wr[src, lane] += sign * pbr[m + 1, lane]
                            wi[src, lane] += conj * sign * pbi[m + 1, lane]
        for lane in range(min(L, count - start)):
            n = start + lane
            for k in range(3):
                slope = (cbar[0, lane] * dcayley[n, 0, k] + cbar[1, lane] * dcayley[n, 1, k]
                         + cbar[2, lane] * dcayley[n, 2, k] + cbar[3, lane] * dcayley[n, 3, k])
                grad[n, k] = switched[n] * slope + dswitched[n, k] * value[lane]


@numba.njit(nogil=True, cache=True)
def pullback_points(points, positions, cut, weight, twojmax, rfac0, rmin0, switchflag,
                    off, scale, cg, cg_start, features, seed, out):  # pragma: no cover (compiled)
    """out (n_positions, 3) += ∂E/∂positions for E = Σ seed · B over ``points``."""
    size = off[twojmax + 1]
    n_max = positions.shape[0]
    vr = np.empty((size, NEIGHBOUR_LANES))
    vi = np.empty((size, NEIGHBOUR_LANES))
    wr = np.empty((size, NEIGHBOUR_LANES))  # the adjoints of V, row by row backward
    wi = np.empty((size, NEIGHBOUR_LANES))
    pr = np.empty((twojmax + 2, NEIGHBOUR_LANES))  # the previous row, zero-padded at both ends
    pi = np.empty((twojmax + 2, NEIGHBOUR_LANES))
    pbr = np.empty((twojmax + 2, NEIGHBOUR_LANES))  # its adjoint
    pbi = np.empty((twojmax + 2, NEIGHBOUR_LANES))
    cayley = np.empty((n_max, 4))
    switched = np.empty(n_max)
    index = np.empty(n_max, dtype=np.int64)
    dcayley = np.empty((n_max, 4, 3))
    dswitched = np.empty((n_max, 3))
    grad = np.empty((n_max, 3))
    lanes_r = np.empty((size, LANES))
    lanes_i = np.empty((size, LANES))
    ubr = np.empty((size, LANES))
    ubi = np.empty((size, LANES))
    vbr = np.empty(size)
    vbi = np.empty(size)
    lane_seed = np.empty((LANES, features.shape[0]))
    result = np.empty((LANES, features.shape[0]))
    n_points = points.shape[0]
    for start in range(0, n_points, LANES):
        u_lanes(points, start, positions, cut, weight, twojmax, rfac0, rmin0, switchflag, off, scale, lanes_r, lanes_i)
        for t in range(LANES):
            if start + t < n_points:
                lane_seed[t] = seed[start + t]
            else:
                lane_seed[t] = 0.0
        ubr[:] = 0.0
        ubi[:] = 0.0
        contract_lanes(features, off, cg, cg_start, lanes_r, lanes_i, result, lane_seed, ubr, ubi, True)
        for t in range(min(LANES, n_points - start)):
            _fold(twojmax, off, scale, ubr, ubi, t, vbr, vbi)
            count = neighbours(points[start + t], positions, cut, weight, rfac0, rmin0, switchflag, cayley,
                               switched, index, dcayley, dswitched, True)
            _neighbour_gradients(cayley, dcayley, switched, dswitched, count, twojmax, off, vbr, vbi,
                                 vr, vi, wr, wi, pr, pi, pbr, pbi, grad)
            for n in range(count):
                for k in range(3):
                    out[index[n], k] -= grad[n, k]  # x = point − atom


def pullback_block(points: np.ndarray, positions: np.ndarray, cut: np.ndarray, weight: np.ndarray,
                   twojmax: int, rfac0: float, rmin0: float, switchflag: int, seed: np.ndarray,
                   threads: int = 1) -> np.ndarray:
    """∂(Σ seed · B)/∂positions (n_positions, 3) of the raw bispectrum components B at
    ``points``, on ``threads`` threads (per-tile sums added in tile order)."""
    t = tables(twojmax)
    points = np.ascontiguousarray(points, dtype=np.float64)
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cut = np.ascontiguousarray(cut, dtype=np.float64)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    seed = np.ascontiguousarray(seed, dtype=np.float64)
    starts = list(range(0, len(points), TILE_POINTS))

    def tile(start: int) -> np.ndarray:
        out = np.zeros((len(positions), 3))
        stop = start + TILE_POINTS
        pullback_points(points[start:stop], positions, cut, weight, twojmax, float(rfac0), float(rmin0),
                        int(switchflag), t.offsets, t.scale, t.cg, t.cg_start, t.features, seed[start:stop], out)
        return out

    threads = max(1, min(int(threads), len(starts)))
    if threads == 1:
        parts = [tile(s) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(tile, starts))
    return sum(parts, np.zeros((len(positions), 3)))
