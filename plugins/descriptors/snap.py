"""The SNAP bispectrum as one feature definition: its parameters, the (j1, j2, j) of each
feature in LAMMPS's order, the Clebsch–Gordan coefficients, and the base class of the
three plugins that compute it — ``bispectrum`` (compiled CPU kernel, blockwise),
``bispectrum_lammps`` (LAMMPS ``compute sna/grid``, the reference, whole grids) and
``bispectrum_torch`` (PyTorch: GPUs and autograd). They share the feature set
``bispectrum``: one stored array, one parameter hash, models trained on any of them
predict with any other.

Defaults are MALA's; with them the features equal MALA's ``*.in.npy`` files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from malaflow.descriptors import Descriptor, Structure, check_elements, param
from malaflow.errors import ParameterError


@dataclass
class BispectrumParams:
    twojmax: int = param(10, "2·J_max of the hyperspherical harmonics; 10 gives 91 features")
    rcutfac: float = param(4.67637, "cutoff scale (Å): atoms of elements i, j interact within rcutfac·(R_i + R_j)")
    rfac0: float = param(0.99363, "maps the cutoff onto the 3-sphere angle θ0 = rfac0·π·(r − rmin0)/(rc − rmin0)")
    rmin0: float = param(0.0, "inner distance (Å) of that mapping")
    radelem: float | dict[str, float] = param(0.5, "element radius R: one value, or {symbol: value}")
    wj: float | dict[str, float] = param(1.0, "neighbour weight per element: one value, or {symbol: value}")
    bzeroflag: int = param(0, "1: subtract the bispectrum of an isolated point")
    quadraticflag: int = param(0, "1: append all products B_i·B_j as features")
    switchflag: int = param(1, "1: smooth cosine switching function to zero at the cutoff")
    elements: list[str] | None = param(None, "element (LAMMPS type) order [elements present, by atomic number]")

    def __post_init__(self) -> None:
        if not 0 <= self.twojmax <= 30:
            raise ParameterError(f"bispectrum: twojmax must be between 0 and 30, got {self.twojmax}")
        if not self.rcutfac > 0:
            raise ParameterError(f"bispectrum: rcutfac must be > 0 Å, got {self.rcutfac}")
        if not 0 < self.rfac0 <= 1:
            raise ParameterError(f"bispectrum: rfac0 must be in (0, 1], got {self.rfac0}")
        for flag in ("bzeroflag", "quadraticflag", "switchflag"):
            if getattr(self, flag) not in (0, 1):
                raise ParameterError(f"bispectrum: {flag} must be 0 or 1, got {getattr(self, flag)}")
        self.elements = check_elements("bispectrum", self.elements)


def bispectrum_indices(twojmax: int) -> list[tuple[int, int, int]]:
    """(j1, j2, j) of each feature B(j1, j2, j), j1 ≥ j2, j ≥ j1, in LAMMPS's order (2j values)."""
    return [
        (j1, j2, j)
        for j1 in range(twojmax + 1)
        for j2 in range(j1 + 1)
        for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2)
        if j >= j1
    ]


def n_bispectrum(twojmax: int) -> int:
    """Number of bispectrum components (LAMMPS's set)."""
    return len(bispectrum_indices(twojmax))


def clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """⟨j1/2 m1/2; j2/2 m2/2 | j/2 m/2⟩ (all arguments doubled, so half-integers are
    integers), by Racah's formula with exact rational arithmetic."""
    if m1 + m2 != m or not (abs(j1 - j2) <= j <= j1 + j2) or (j1 + j2 + j) % 2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    f = math.factorial
    a, b, c = (j1 + j2 - j) // 2, (j1 - m1) // 2, (j2 + m2) // 2
    d, e = (j - j2 + m1) // 2, (j - j1 - m2) // 2
    total = Fraction(0)
    for k in range(max(0, -d, -e), min(a, b, c) + 1):
        total += Fraction((-1) ** k, f(k) * f(a - k) * f(b - k) * f(c - k) * f(d + k) * f(e + k))
    norm = Fraction(
        (j + 1) * f((j1 + j2 - j) // 2) * f((j1 - j2 + j) // 2) * f((-j1 + j2 + j) // 2),
        f((j1 + j2 + j) // 2 + 1),
    ) * (
        f((j1 + m1) // 2) * f((j1 - m1) // 2) * f((j2 + m2) // 2) * f((j2 - m2) // 2)
        * f((j + m) // 2) * f((j - m) // 2)
    )
    return float(total) * math.sqrt(norm)


def u_offsets(twojmax: int) -> list[int]:
    """Start of U_j in the flat array of all (j+1)×(j+1) matrices, row (m') major."""
    return [sum((k + 1) ** 2 for k in range(j)) for j in range(twojmax + 2)]


class SnapBispectrum(Descriptor):
    """What the three implementations share: parameters, feature count, reach."""

    features = "bispectrum"
    Params = BispectrumParams

    def per_element(self, key: str, order: list[int]) -> list[float]:
        """radelem or wj for each element in ``order``."""
        value = getattr(self.params, key)
        if not isinstance(value, Mapping):
            return [float(value)] * len(order)
        missing = [chemical_symbols[z] for z in order if chemical_symbols[z] not in value]
        if missing:
            raise ParameterError(f"bispectrum: {key} has no value for element(s) {missing}")
        return [float(value[chemical_symbols[z]]) for z in order]

    def n_features(self, structure: Structure) -> int:
        n = n_bispectrum(self.params.twojmax)
        return n + n * (n + 1) // 2 if self.params.quadraticflag else n

    def halo(self) -> float:
        """Neighbours of a grid point within rcutfac·2·max(radelem) (sna/grid's cutoff)."""
        value = self.params.radelem
        radii = value.values() if isinstance(value, Mapping) else [value]
        return 2.0 * self.params.rcutfac * max(radii)


def bzero(twojmax: int) -> np.ndarray:
    """B(j1, j2, j) of an isolated point (U^tot = δ): j + 1, 2j values; bzeroflag subtracts it."""
    return np.array([j + 1.0 for _, _, j in bispectrum_indices(twojmax)])


def finish_features(b: Any, params: BispectrumParams) -> Any:
    """LAMMPS's options on the raw components B (points × features, a numpy array or a
    torch tensor): bzeroflag subtracts an isolated point's B(j1, j2, j) = j + 1 (2j
    values); quadraticflag appends ½B_i² and B_i·B_j (i < j), in LAMMPS's order."""
    numpy = isinstance(b, np.ndarray)
    if not numpy:
        import torch
    same = np.asarray if numpy else (lambda x: torch.as_tensor(x, dtype=b.dtype, device=b.device))  # noqa: E731
    if params.bzeroflag:
        b = b - same(bzero(params.twojmax))
    if params.quadraticflag:
        iu, ju = np.triu_indices(b.shape[1])
        products = b[:, iu] * b[:, ju] * same(np.where(iu == ju, 0.5, 1.0))
        b = np.concatenate([b, products], axis=1) if numpy else torch.cat([b, products], dim=1)
    return b


def finish_features_adjoint(b: np.ndarray, grad: np.ndarray, params: BispectrumParams) -> np.ndarray:
    """∂E/∂B_raw from ∂E/∂features of :func:`finish_features` (numpy): the quadratic
    products ½B_i², B_i·B_j pass their seeds on by the product rule; bzero is a shift."""
    n = b.shape[1]
    raw = np.array(grad[:, :n], dtype=float)
    if params.quadraticflag:
        if params.bzeroflag:
            b = b - bzero(params.twojmax)
        iu, ju = np.triu_indices(n)
        seed = grad[:, n:] * np.where(iu == ju, 0.5, 1.0)
        np.add.at(raw.T, iu, (seed * b[:, ju]).T)
        np.add.at(raw.T, ju, (seed * b[:, iu]).T)
    return raw
