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
4. For each neighbour, 16 at a time: the Wigner recursion again, now carrying
   ∂V/∂(x, y, z) in forward mode (∂a, ∂b from :func:`.snap_kernel.neighbours`), and
   ∂E/∂x_k = Σ V̄ · (s ∂V/∂x_k + ∂s/∂x_k V); the atom's gradient is minus that
   (x = point − atom).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .snap_kernel import LANES, NEIGHBOUR_LANES, TILE_POINTS, _finish_u, _u_sum, neighbours, tables


@numba.njit(nogil=True, cache=True)
def _contraction_adjoint(features, off, cg, cg_start, ur, ui, seed, ubr, ubi):  # pragma: no cover (compiled)
    """Ū (entries × LANES) += Σ_f seed[:, f] ∂B_f/∂U for LANES points' U^tot (the loops
    of ``_bispectrum_lanes``, run twice per Z entry: Z, then its adjoint)."""
    sr = np.empty(LANES)
    si = np.empty(LANES)
    zr = np.empty(LANES)
    zi = np.empty(LANES)
    zbr = np.empty(LANES)
    zbi = np.empty(LANES)
    for f in range(features.shape[0]):
        j1, j2, j = features[f, 0], features[f, 1], features[f, 2]
        c0 = cg_start[j1, j2, j]
        jo = off[j]
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:
                    break
                ma1min = max(0, (2 * ma - j - j2 + j1) // 2)
                ma2max = (2 * ma - j - (2 * ma1min - j1) + j2) // 2
                na = min(j1, (2 * ma - j + j2 + j1) // 2) - ma1min + 1
                mb1min = max(0, (2 * mb - j - j2 + j1) // 2)
                mb2max = (2 * mb - j - (2 * mb1min - j1) + j2) // 2
                nb = min(j1, (2 * mb - j + j2 + j1) // 2) - mb1min + 1
                u1 = off[j1] + (j1 + 1) * mb1min
                u2 = off[j2] + (j2 + 1) * mb2max
                icgb = c0 + mb1min * (j2 + 1) + mb2max
                zr[:] = 0.0
                zi[:] = 0.0
                for _ in range(nb):
                    sr[:] = 0.0
                    si[:] = 0.0
                    k1 = u1 + ma1min
                    k2 = u2 + ma2max
                    icga = c0 + ma1min * (j2 + 1) + ma2max
                    for _ in range(na):
                        c = cg[icga]
                        for t in range(LANES):
                            ar, ai, br, bi = ur[k1, t], ui[k1, t], ur[k2, t], ui[k2, t]
                            sr[t] += c * (ar * br - ai * bi)
                            si[t] += c * (ar * bi + ai * br)
                        k1 += 1
                        k2 -= 1
                        icga += j2
                    cb = cg[icgb]
                    for t in range(LANES):
                        zr[t] += cb * sr[t]
                        zi[t] += cb * si[t]
                    u1 += j1 + 1
                    u2 -= j2 + 1
                    icgb += j2
                k = jo + mb * (j + 1) + ma
                weight = 1.0 if 2 * mb == j and ma == mb else 2.0  # B = 2·total
                for t in range(LANES):
                    g = weight * seed[t, f]
                    ubr[k, t] += g * zr[t]
                    ubi[k, t] += g * zi[t]
                    zbr[t] = g * ur[k, t]
                    zbi[t] = g * ui[k, t]
                u1 = off[j1] + (j1 + 1) * mb1min
                u2 = off[j2] + (j2 + 1) * mb2max
                icgb = c0 + mb1min * (j2 + 1) + mb2max
                for _ in range(nb):
                    k1 = u1 + ma1min
                    k2 = u2 + ma2max
                    icga = c0 + ma1min * (j2 + 1) + ma2max
                    cb = cg[icgb]
                    for _ in range(na):
                        c = cg[icga] * cb
                        for t in range(LANES):
                            pr, pi = c * zbr[t], c * zbi[t]
                            ar, ai, br, bi = ur[k1, t], ui[k1, t], ur[k2, t], ui[k2, t]
                            ubr[k1, t] += pr * br + pi * bi
                            ubi[k1, t] += pi * br - pr * bi
                            ubr[k2, t] += pr * ar + pi * ai
                            ubi[k2, t] += pi * ar - pr * ai
                        k1 += 1
                        k2 -= 1
                        icga += j2
                    u1 += j1 + 1
                    u2 -= j2 + 1
                    icgb += j2


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
                         vr, vi, dvr, dvi, pr, pi, dpr, dpi, grad):  # pragma: no cover (compiled)
    """grad[n, k] = Σ V̄ · ∂(s_n V(n))/∂x_k for the ``count`` neighbours: the recursion
    of ``_u_sum`` with its x, y, z derivatives carried along, 16 neighbours in lanes."""
    L = NEIGHBOUR_LANES
    ar = np.empty(L)
    ai = np.empty(L)
    br = np.empty(L)
    bi = np.empty(L)
    s = np.empty(L)
    da = np.empty((4, 3, L))
    ds = np.empty((3, L))
    acc = np.empty((3, L))
    for start in range(0, count, L):
        for lane in range(L):
            n = start + lane
            live = n < count
            ar[lane] = cayley[n, 0] if live else 1.0
            ai[lane] = cayley[n, 1] if live else 0.0
            br[lane] = cayley[n, 2] if live else 0.0
            bi[lane] = cayley[n, 3] if live else 0.0
            s[lane] = switched[n] if live else 0.0
            for k in range(3):
                for q in range(4):
                    da[q, k, lane] = dcayley[n, q, k] if live else 0.0
                ds[k, lane] = dswitched[n, k] if live else 0.0
                acc[k, lane] = vbr[0] * ds[k, lane]  # V_0 = 1
        for lane in range(L):
            vr[0, lane] = 1.0
            vi[0, lane] = 0.0
            for k in range(3):
                dvr[k, 0, lane] = 0.0
                dvi[k, 0, lane] = 0.0
        for j in range(1, twojmax + 1):
            jo, po = off[j], off[j - 1]
            for mb in range(j // 2 + 1):
                for m in range(j):
                    if 2 * mb <= j - 1:
                        src, sign, conj = po + mb * j + m, 1.0, 1.0
                    else:
                        src, sign, conj = po + (j - 1 - mb) * j + (j - 1 - m), 1.0 - 2.0 * ((m + mb) % 2), -1.0
                    for lane in range(L):
                        pr[m, lane] = sign * vr[src, lane]
                        pi[m, lane] = conj * sign * vi[src, lane]
                        for k in range(3):
                            dpr[k, m, lane] = sign * dvr[k, src, lane]
                            dpi[k, m, lane] = conj * sign * dvi[k, src, lane]
                row = jo + mb * (j + 1)
                for ma in range(j + 1):
                    for lane in range(L):
                        # V[ma] = conj(a)·P[ma] − conj(b)·P[ma − 1] (P[j] and P[−1] are 0)
                        xr = 0.0
                        xi = 0.0
                        if ma < j:
                            xr += ar[lane] * pr[ma, lane] + ai[lane] * pi[ma, lane]
                            xi += ar[lane] * pi[ma, lane] - ai[lane] * pr[ma, lane]
                        if ma > 0:
                            xr -= br[lane] * pr[ma - 1, lane] + bi[lane] * pi[ma - 1, lane]
                            xi -= br[lane] * pi[ma - 1, lane] - bi[lane] * pr[ma - 1, lane]
                        vr[row + ma, lane] = xr
                        vi[row + ma, lane] = xi
                        for k in range(3):
                            dr = 0.0
                            di = 0.0
                            if ma < j:
                                dr += (da[0, k, lane] * pr[ma, lane] + ar[lane] * dpr[k, ma, lane]
                                       + da[1, k, lane] * pi[ma, lane] + ai[lane] * dpi[k, ma, lane])
                                di += (da[0, k, lane] * pi[ma, lane] + ar[lane] * dpi[k, ma, lane]
                                       - da[1, k, lane] * pr[ma, lane] - ai[lane] * dpr[k, ma, lane])
                            if ma > 0:
                                dr -= (da[2, k, lane] * pr[ma - 1, lane] + br[lane] * dpr[k, ma - 1, lane]
                                       + da[3, k, lane] * pi[ma - 1, lane] + bi[lane] * dpi[k, ma - 1, lane])
                                di -= (da[2, k, lane] * pi[ma - 1, lane] + br[lane] * dpi[k, ma - 1, lane]
                                       - da[3, k, lane] * pr[ma - 1, lane] - bi[lane] * dpr[k, ma - 1, lane])
                            dvr[k, row + ma, lane] = dr
                            dvi[k, row + ma, lane] = di
                            acc[k, lane] += (vbr[row + ma] * (s[lane] * dr + ds[k, lane] * xr)
                                             + vbi[row + ma] * (s[lane] * di + ds[k, lane] * xi))
        for lane in range(L):
            if start + lane < count:
                for k in range(3):
                    grad[start + lane, k] = acc[k, lane]


@numba.njit(nogil=True, cache=True)
def pullback_points(points, positions, cut, weight, twojmax, rfac0, rmin0, switchflag,
                    off, scale, cg, cg_start, features, seed, out):  # pragma: no cover (compiled)
    """out (n_positions, 3) += ∂E/∂positions for E = Σ seed · B over ``points``."""
    size = off[twojmax + 1]
    n_max = positions.shape[0]
    ur = np.empty(size)
    ui = np.empty(size)
    vr = np.empty((size, NEIGHBOUR_LANES))
    vi = np.empty((size, NEIGHBOUR_LANES))
    accr = np.empty((size, NEIGHBOUR_LANES))
    acci = np.empty((size, NEIGHBOUR_LANES))
    dvr = np.empty((3, size, NEIGHBOUR_LANES))
    dvi = np.empty((3, size, NEIGHBOUR_LANES))
    pr = np.empty((twojmax + 1, NEIGHBOUR_LANES))
    pi = np.empty((twojmax + 1, NEIGHBOUR_LANES))
    dpr = np.empty((3, twojmax + 1, NEIGHBOUR_LANES))
    dpi = np.empty((3, twojmax + 1, NEIGHBOUR_LANES))
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
    n_points = points.shape[0]
    for start in range(0, n_points, LANES):
        for t in range(LANES):
            p = start + t
            count = 0
            if p < n_points:
                count = neighbours(points[p], positions, cut, weight, rfac0, rmin0, switchflag, cayley, switched,
                                   index, dcayley, dswitched, False)
                lane_seed[t] = seed[p]
            else:
                lane_seed[t] = 0.0
            _u_sum(cayley, switched, count, twojmax, off, vr, vi, pr, pi, accr, acci, ur, ui)
            _finish_u(twojmax, off, scale, ur, ui)
            lanes_r[:, t] = ur
            lanes_i[:, t] = ui
        ubr[:] = 0.0
        ubi[:] = 0.0
        _contraction_adjoint(features, off, cg, cg_start, lanes_r, lanes_i, lane_seed, ubr, ubi)
        for t in range(min(LANES, n_points - start)):
            _fold(twojmax, off, scale, ubr, ubi, t, vbr, vbi)
            count = neighbours(points[start + t], positions, cut, weight, rfac0, rmin0, switchflag, cayley,
                               switched, index, dcayley, dswitched, True)
            _neighbour_gradients(cayley, dcayley, switched, dswitched, count, twojmax, off, vbr, vbi,
                                 vr, vi, dvr, dvi, pr, pi, dpr, dpi, grad)
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
