"""The contraction of the compiled SNAP bispectrum (LAMMPS's ``compute_zi``/``compute_bi``
loop structure) and its adjoint, LANES points at a time in SIMD lanes: shared by the
features (:mod:`.snap_kernel`) and their pullback (:mod:`.snap_pullback`)."""

from __future__ import annotations

import numba
import numpy as np

#: points whose contraction runs side by side, one SIMD lane each: the loops over the
#: lanes have this constant length, which LLVM compiles to full-width vector code
LANES = 32


@numba.njit(nogil=True, cache=True)
def z_ranges(j1, j2, j, mb, ma, c0, off):  # pragma: no cover (compiled)
    """Where the sums of Z(j1, j2, j)[mb, ma] start and how long they run (LAMMPS's
    ``compute_zi`` bounds): (u1, u2, icgb, ma1min, ma2max, na, nb)."""
    ma1min = max(0, (2 * ma - j - j2 + j1) // 2)
    ma2max = (2 * ma - j - (2 * ma1min - j1) + j2) // 2
    na = min(j1, (2 * ma - j + j2 + j1) // 2) - ma1min + 1
    mb1min = max(0, (2 * mb - j - j2 + j1) // 2)
    mb2max = (2 * mb - j - (2 * mb1min - j1) + j2) // 2
    nb = min(j1, (2 * mb - j + j2 + j1) // 2) - mb1min + 1
    u1 = off[j1] + (j1 + 1) * mb1min
    u2 = off[j2] + (j2 + 1) * mb2max
    icgb = c0 + mb1min * (j2 + 1) + mb2max
    return u1, u2, icgb, ma1min, ma2max, na, nb


@numba.njit(nogil=True, cache=True)
def z_entry(j1, j2, j, mb, ma, c0, off, cg, ur, ui, sr, si, zr, zi):  # pragma: no cover (compiled)
    """Z(j1, j2, j)[mb, ma] = Σ_{mb1} C Σ_{ma1} C U_j1[mb1, ma1] U_j2[mb2, ma2] of LANES
    points (U^tot entries × LANES) into zr, zi (sr, si: work arrays)."""
    u1, u2, icgb, ma1min, ma2max, na, nb = z_ranges(j1, j2, j, mb, ma, c0, off)
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


@numba.njit(nogil=True, cache=True)
def z_adjoint(j1, j2, j, mb, ma, c0, off, cg, ur, ui, zbr, zbi, ubr, ubi):  # pragma: no cover (compiled)
    """Ū += ∂(Z̄ · Z)/∂U for one Z entry with adjoint Z̄ (zbr, zbi): for each product
    P = U_j1·U_j2 entering Z with weight c, Ū_j1 += c Z̄ ∘ U_j2 and Ū_j2 += c Z̄ ∘ U_j1
    (the complex product's transpose on (re, im) pairs)."""
    u1, u2, icgb, ma1min, ma2max, na, nb = z_ranges(j1, j2, j, mb, ma, c0, off)
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
def contract_lanes(features, off, cg, cg_start, ur, ui, out, seed, ubr, ubi, adjoint):  # pragma: no cover (compiled)
    """B of LANES points at once from their U^tot (entries × LANES) into ``out`` (LANES ×
    features); with ``adjoint``, also Ū (ubr, ubi) += Σ_f seed[:, f] ∂B_f/∂U^tot.

    Z(j1, j2, j)[mb, ma] over the non-zero Clebsch–Gordan ranges (:func:`z_entry`),
    contracted at once with conj(U_j) over the rows 2mb ≤ j (``compute_bi``), for the
    (j1, j2, j) of the features only: B = 2 Re Σ w conj(U_j)·Z (w = ½ on the middle
    entry of even j). Its adjoint: Ū_j += 2w seed·Z and Z̄ = 2w seed·U_j
    (:func:`z_adjoint`). Every lane does the same operations in the same order on its
    own point."""
    sr = np.empty(LANES)
    si = np.empty(LANES)
    zr = np.empty(LANES)
    zi = np.empty(LANES)
    zbr = np.empty(LANES)
    zbi = np.empty(LANES)
    total = np.empty(LANES)
    for f in range(features.shape[0]):
        j1, j2, j = features[f, 0], features[f, 1], features[f, 2]
        c0 = cg_start[j1, j2, j]
        jo = off[j]
        total[:] = 0.0
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:  # the middle row of even j: its mirror half
                    break
                z_entry(j1, j2, j, mb, ma, c0, off, cg, ur, ui, sr, si, zr, zi)
                k = jo + mb * (j + 1) + ma
                weight = 0.5 if 2 * mb == j and ma == mb else 1.0
                for t in range(LANES):
                    total[t] += weight * (ur[k, t] * zr[t] + ui[k, t] * zi[t])
                if adjoint:
                    for t in range(LANES):
                        g = 2.0 * weight * seed[t, f]
                        ubr[k, t] += g * zr[t]
                        ubi[k, t] += g * zi[t]
                        zbr[t] = g * ur[k, t]
                        zbi[t] = g * ui[k, t]
                    z_adjoint(j1, j2, j, mb, ma, c0, off, cg, ur, ui, zbr, zbi, ubr, ubi)
        for t in range(LANES):
            out[t, f] = 2.0 * total[t]
