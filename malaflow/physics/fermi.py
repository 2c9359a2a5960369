"""Exact integrals of a piecewise-linear DOS against Fermi–Dirac kernels, vectorised.

With x = (ε − μ)/k_BT and f(x) = 1/(1 + eˣ), every observable of the LDOS is a
linear functional ∫ D(ε) g(ε) dε with g ∈ {f, ε·f, s}, where the entropy kernel is
s = −[f ln f + (1 − f) ln(1 − f)]. Taking D piecewise linear between the energy-grid
points (Ellis et al., PRB 104, 035120, Eqs. 32–33: the "analytic" scheme) turns
each integral into a weight vector: w_k = ∫ φ_k(ε) g(ε) dε with φ_k the hat function
of grid point k. Those need the antiderivatives of xᵐ f(x) and xᵐ s(x), which are
polylogarithms Li₁…Li₃.

Numerical stability: the antiderivatives are written as a step-function part
(exact polynomials) plus Fermi-tail parts that use only Li_s(−e^{−|x|}) ∈ [−1, 0],
so nothing overflows or cancels for |x| in the thousands (a 25 eV window at 300 K).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import spence, zeta

_LN2 = math.log(2.0)


def _eta(n: int) -> float:
    """Dirichlet eta η(n) = (1 − 2^{1−n}) ζ(n), with η(1) = ln 2."""
    if n == 1:
        return _LN2
    return float((1.0 - 2.0 ** (1 - n)) * zeta(float(n)))


_SERIES_TERMS = 48  # |e^{-y}|^48 < 1e-20 for y ≥ 1
_TAYLOR_TERMS = 40  # (1/π)^40 < 1e-19 for y < 1
_ETA_TAYLOR = {s: np.array([_eta(s - k) / math.factorial(k) for k in range(_TAYLOR_TERMS)]) for s in (3, 4)}


def polylog_neg_exp(s: int, y: np.ndarray) -> np.ndarray:
    """Li_s(−e^{−y}) for y ≥ 0 and s = 1, 2, 3, 4, elementwise.

    Li₁ in closed form (log1p). For s ≥ 2 the power series Σ (−1)^k e^{−ky}/k^s
    where it converges fast (y ≥ 1); below, Spence's function for Li₂ and the
    Taylor series −Σ η(s−k) (−y)^k/k! (radius π) for Li₃, Li₄.
    """
    y = np.asarray(y, dtype=float)
    if s == 1:
        return -np.log1p(np.exp(-y))
    if s not in (2, 3, 4):
        raise ValueError(f"Li_{s} is not implemented here (s = 1…4)")
    out = np.empty_like(y)
    far = y >= 1.0
    if far.any():
        z = -np.exp(-y[far])
        k = np.arange(1, _SERIES_TERMS + 1)
        out[far] = np.sum(z[:, None] ** k / k.astype(float) ** s, axis=1)
    near = ~far
    if near.any():
        if s == 2:
            out[near] = spence(1.0 + np.exp(-y[near]))  # Li₂(z) = spence(1 − z)
        else:
            powers = (-y[near])[:, None] ** np.arange(_TAYLOR_TERMS)
            out[near] = -powers @ _ETA_TAYLOR[s]
    return out


def _tail(m: int, y: np.ndarray, shift: int) -> np.ndarray:
    """m! [η(m+1+shift) + Σ_{j=0}^{m} y^{m−j}/(m−j)! Li_{j+1+shift}(−e^{−y})], y ≥ 0.

    shift=0: ∫₀^y tᵐ/(1+eᵗ) dt.  shift=1: ∫₀^y tᵐ ln(1+e^{−t}) dt.
    """
    total = np.full_like(y, _eta(m + 1 + shift))
    for j in range(m + 1):
        total += y ** (m - j) / math.factorial(m - j) * polylog_neg_exp(j + 1 + shift, y)
    return math.factorial(m) * total


def fermi_antiderivative(m: int, x: np.ndarray) -> np.ndarray:
    """Φ_m(x) = ∫₀ˣ tᵐ f(t) dt, f(t) = 1/(1 + eᵗ).

    f = θ(−t) + sign(t)/(1 + e^{|t|}): the step gives min(x, 0)^{m+1}/(m+1); the
    odd-symmetric tail gives P_m(|x|) for x ≥ 0 and (−1)ᵐ P_m(|x|) for x < 0.
    """
    x = np.asarray(x, dtype=float)
    step = np.minimum(x, 0.0) ** (m + 1) / (m + 1)
    sign = np.where(x >= 0, 1.0, (-1.0) ** m)
    return step + sign * _tail(m, np.abs(x), 0)


def entropy_antiderivative(m: int, x: np.ndarray) -> np.ndarray:
    """Σ_m(x) = ∫₀ˣ tᵐ s(t) dt with s = −[f ln f + (1−f) ln(1−f)] = ln(1+e^{−t}) + t f(t).

    s is even, so Σ_m(x) = Q_m(x) for x ≥ 0 and (−1)^{m+1} Q_m(|x|) for x < 0, where
    Q_m(y) = ∫₀^y tᵐ ln(1+e^{−t}) dt + P_{m+1}(y).
    """
    x = np.asarray(x, dtype=float)
    y = np.abs(x)
    q = _tail(m, y, 1) + _tail(m + 1, y, 0)
    return np.where(x >= 0, 1.0, (-1.0) ** (m + 1)) * q


def fermi_dirac(energy: np.ndarray, mu: float, kt: float) -> np.ndarray:
    """Occupation f(ε; μ, T) = 1/(1 + e^{(ε−μ)/k_BT}), overflow-safe."""
    from scipy.special import expit

    return expit(-(np.asarray(energy, dtype=float) - mu) / kt)


def entropy_kernel(energy: np.ndarray, mu: float, kt: float) -> np.ndarray:
    """s(ε) = −[f ln f + (1−f) ln(1−f)], computed as ln(1+e^{−|x|}) + |x| f(|x|)."""
    x = np.abs((np.asarray(energy, dtype=float) - mu) / kt)
    return np.log1p(np.exp(-x)) + x * fermi_dirac(x, 0.0, 1.0)
