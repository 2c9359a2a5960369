"""DOS and LDOS physics: DOS, density, electron count, Fermi level, band energy, entropy.

Every observable is a linear functional of the LDOS along energy, ∫ LDOS(r, ε) g(ε) dε,
so it is a dot product with a weight vector over the energy grid (see
:func:`energy_weights`). Spatial reductions (the DOS) are dask sums, done chunk by
chunk; the density is returned lazily, ready to be written chunk-wise to Zarr.

Schemes:

``analytic``
    D(ε) piecewise linear between the grid points and falling linearly to zero one
    spacing beyond each end (MALA's convention), integrated exactly against the
    Fermi–Dirac kernels (Ellis et al. 2021, Eqs. 32–33). Needs a uniform grid.
``quadrature``
    The trapezoidal rule on the grid for D(ε)·g(ε).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr
from scipy.optimize import brentq

from ..errors import ElectronCountError, ParameterError
from ..grid import SPATIAL_DIMS, voxel_volume
from ..units import KB_EV
from .fermi import entropy_antiderivative, entropy_kernel, fermi_antiderivative, fermi_dirac

SCHEMES = ("analytic", "quadrature")


# --------------------------------------------------------------------------- checks


def check_temperature(temperature: float) -> float:
    if temperature is None or not np.isfinite(temperature) or temperature <= 0:
        raise ParameterError(
            f"the electronic temperature must be a positive number of kelvin, got {temperature!r}"
        )
    return float(temperature)


def check_energies(energies: np.ndarray, scheme: str) -> np.ndarray:
    if scheme not in SCHEMES:
        raise ParameterError(f"unknown integration scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    e = np.asarray(energies, dtype=float)
    if e.ndim != 1 or len(e) < 2:
        raise ParameterError(f"the energy grid needs at least 2 points, got shape {e.shape}")
    step = np.diff(e)
    if np.any(step <= 0):
        raise ParameterError("the energy grid must increase strictly")
    if scheme == "analytic" and not np.allclose(step, step[0], rtol=1e-6, atol=0):
        raise ParameterError(
            f"the analytic scheme needs a uniform energy grid; spacings range from "
            f"{step.min():g} to {step.max():g} eV (use scheme='quadrature')"
        )
    return e


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ParameterError(f"the {what} contains NaN or infinite values")
    return values


# --------------------------------------------------------------------------- weights


def trapezoid_weights(e: np.ndarray) -> np.ndarray:
    """Weights of the trapezoidal rule on the grid ``e``."""
    trap = np.empty_like(e)
    d = np.diff(e)
    trap[0], trap[-1] = d[0] / 2, d[-1] / 2
    trap[1:-1] = (d[:-1] + d[1:]) / 2
    return trap


def energy_weights(
    energies: np.ndarray, mu: float, temperature: float, kernel: str = "fermi",
    power: int = 0, scheme: str = "analytic",
) -> np.ndarray:
    """w with ∫ D(ε) εᵖ g(ε) dε = Σ_k w_k D(ε_k), g = f (kernel "fermi") or s ("entropy")."""
    e = check_energies(energies, scheme)
    kt = KB_EV * check_temperature(temperature)
    if scheme == "quadrature":
        g = fermi_dirac(e, mu, kt) if kernel == "fermi" else entropy_kernel(e, mu, kt)
        return trapezoid_weights(e) * g * e**power
    h = e[1] - e[0]
    nodes = np.concatenate([[e[0] - h], e, [e[-1] + h]]) - mu  # relative to μ
    anti = fermi_antiderivative if kernel == "fermi" else entropy_antiderivative
    x = nodes / kt
    J = [anti(m, x[1:]) - anti(m, x[:-1]) for m in range(power + 2)]
    a, b = nodes[:-1], nodes[1:]
    if power == 0:
        left = kt / h * (b * J[0] - kt * J[1])  # ∫ (b − ε)/h · g  on each interval
        right = kt / h * (kt * J[1] - a * J[0])  # ∫ (ε − a)/h · g
    elif power == 1:
        left = kt / h * (b * mu * J[0] + (b - mu) * kt * J[1] - kt**2 * J[2])
        right = kt / h * (-a * mu * J[0] + (mu - a) * kt * J[1] + kt**2 * J[2])
    else:
        raise ParameterError(f"power must be 0 or 1, got {power}")
    return right[:-1] + left[1:]


def occupation_slope_weights(energies: np.ndarray, mu: float, temperature: float, scheme: str = "analytic") -> np.ndarray:
    """w with ∂/∂μ ∫ D(ε) f(ε; μ, T) dε = Σ_k w_k D_k: the μ-derivative of the
    ``fermi`` power-0 weights. Analytic scheme: ∂f/∂μ = −∂f/∂ε and integration by parts
    against the hat function φ_k (slope ±1/h) give w_k = (∫_{ε_{k−1}}^{ε_k} f − ∫_{ε_k}^{ε_{k+1}} f)/h."""
    e = check_energies(energies, scheme)
    kt = KB_EV * check_temperature(temperature)
    if scheme == "quadrature":
        f = fermi_dirac(e, mu, kt)
        return trapezoid_weights(e) * f * (1.0 - f) / kt
    h = e[1] - e[0]
    x = (np.concatenate([[e[0] - h], e, [e[-1] + h]]) - mu) / kt
    interval = kt * (fermi_antiderivative(0, x[1:]) - fermi_antiderivative(0, x[:-1]))  # ∫ f on each interval
    return (interval[:-1] - interval[1:]) / h


# --------------------------------------------------------------------------- observables


def density_of_states(ldos: xr.DataArray, cell: np.ndarray) -> xr.DataArray:
    """D(ε) = Σ_r LDOS(r, ε) ΔV in 1/eV, reduced chunk by chunk (lazy if ``ldos`` is)."""
    grid = tuple(ldos.sizes[d] for d in SPATIAL_DIMS)
    dos = ldos.sum(dim=SPATIAL_DIMS, dtype=np.float64, skipna=False) * voxel_volume(cell, grid)
    dos.attrs = {"units": "1/eV"}
    return dos


def electron_count(dos: np.ndarray, energies: np.ndarray, mu: float, temperature: float, scheme: str = "analytic") -> float:
    """N(μ) = ∫ D(ε) f(ε; μ, T) dε."""
    return float(np.dot(dos, energy_weights(energies, mu, temperature, "fermi", 0, scheme)))


def band_energy(dos: np.ndarray, energies: np.ndarray, mu: float, temperature: float, scheme: str = "analytic") -> float:
    """E_b = ∫ ε D(ε) f(ε; μ, T) dε in eV."""
    return float(np.dot(dos, energy_weights(energies, mu, temperature, "fermi", 1, scheme)))


def entropy_contribution(dos: np.ndarray, energies: np.ndarray, mu: float, temperature: float, scheme: str = "analytic") -> float:
    """−T·S in eV, S = −k_B ∫ D [f ln f + (1−f) ln(1−f)] dε."""
    kt = KB_EV * check_temperature(temperature)
    return -kt * float(np.dot(dos, energy_weights(energies, mu, temperature, "entropy", 0, scheme)))


def fermi_level(dos: np.ndarray, energies: np.ndarray, temperature: float, n_electrons: float, scheme: str = "analytic") -> float:
    """The μ with N(μ) = N_electrons, by bracketing and Brent's method.

    N(μ) increases monotonically from 0 to ∫D, so a root exists exactly when
    0 < N_electrons < ∫D; the bracket is widened until it holds the root.
    """
    dos = check_finite(dos, "DOS")
    e = check_energies(energies, scheme)
    kt = KB_EV * check_temperature(temperature)
    total = electron_count(dos, e, e[-1] + 2 * (e[-1] - e[0]) + 200 * kt, temperature, scheme)
    if not 0 < n_electrons < total:
        raise ElectronCountError(
            f"{n_electrons} electrons cannot be placed: the DOS holds between 0 and {total:.6g} "
            "electrons on this energy grid"
        )
    def excess(mu: float) -> float:
        return electron_count(dos, e, mu, temperature, scheme) - n_electrons

    width = e[-1] - e[0]
    lo, hi = e[0], e[-1]
    while excess(lo) > 0:
        lo -= width
    while excess(hi) < 0:
        hi += width
    return float(brentq(excess, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=500))


def density(ldos: xr.DataArray, mu: float, temperature: float, scheme: str = "analytic") -> xr.DataArray:
    """n(r) = ∫ LDOS(r, ε) f(ε; μ, T) dε in 1/Å³ — lazy (dask) if ``ldos`` is."""
    w = energy_weights(ldos["energy"].values, mu, temperature, "fermi", 0, scheme)
    n = xr.dot(ldos, xr.DataArray(w, dims="energy"), dim="energy")
    n.attrs = {"units": "1/Angstrom^3"}
    return n


@dataclass
class Observables:
    """Scalars from an LDOS, in eV (and K); ``scheme`` says how they were integrated."""

    fermi_energy: float
    n_electrons: float
    band_energy: float
    entropy_contribution: float
    temperature: float
    scheme: str

    units = {"fermi_energy": "eV", "n_electrons": "", "band_energy": "eV",
             "entropy_contribution": "eV", "temperature": "K"}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BROADENINGS = ("gaussian", "fermi-dirac")


def eigenvalue_dos(
    eigenvalues: np.ndarray, k_weights: np.ndarray, energies: np.ndarray, width: float,
    broadening: str = "gaussian", spin_degeneracy: float = 2.0,
) -> np.ndarray:
    """D(ε) = Σ_k w_k Σ_n δ(ε − ε_nk) in 1/eV from Kohn–Sham eigenvalues (eV, (k, band)).

    The k weights are normalised to sum to ``spin_degeneracy`` (2: each state holds both
    spins, as QE's weights for an unpolarised run; 1: one spin channel). ``gaussian``:
    δ(x) = exp(−x²/w²)/(√π w), the convention of QE's dos.x (degauss) and pp.x
    (degauss_ldos), so the DOS of the same run compares directly; ``fermi-dirac``:
    δ(x) = −∂f/∂x = 1/(4w cosh²(x/2w)) with w = k_B·T.
    """
    if broadening not in BROADENINGS:
        raise ParameterError(f"broadening must be one of {BROADENINGS}, got {broadening!r}")
    if not width > 0:
        raise ParameterError(f"the broadening width must be > 0 eV, got {width}")
    eigenvalues = np.asarray(eigenvalues, dtype=float)
    weights = np.asarray(k_weights, dtype=float)
    if eigenvalues.ndim != 2 or len(weights) != len(eigenvalues):
        raise ParameterError(f"eigenvalues of shape (k points, bands) and one weight per k point are needed, "
                             f"got {eigenvalues.shape} and {weights.shape}")
    weights = weights * (spin_degeneracy / weights.sum())
    energies = np.asarray(energies, dtype=float)
    dos = np.zeros(len(energies))
    for states, w in zip(eigenvalues, weights):  # one k point at a time: memory bands × energies
        x = (energies[None, :] - states[:, None]) / width
        if broadening == "gaussian":
            delta = np.exp(-x * x) / (np.sqrt(np.pi) * width)
        else:
            delta = 1.0 / (4.0 * width * np.cosh(np.clip(x / 2.0, -350.0, 350.0)) ** 2)
        dos += w * delta.sum(axis=0)
    return dos
