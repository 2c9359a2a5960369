"""``gaussian``: the atomic density descriptor.

At a grid point r, feature e is Σ over atoms of element e and their periodic images
within the cutoff of a normalised Gaussian, (2πσ²)^(-3/2) exp(−|r − R|²/2σ²) — a
smeared atomic density in 1/Å³ (the descriptor MALA calls "atomic density"). Computed
for any block of points from the atoms alone, so chunks go to any worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from malaflow import hookimpl
from malaflow.descriptors import Descriptor, Structure, check_elements, param, sequential_sum
from malaflow.errors import ParameterError


@dataclass
class GaussianParams:
    sigma: float = param(0.5, "width σ of each atom's Gaussian (Å)")
    cutoff: float = param(4.67637, "atoms farther than this from a point are left out (Å)")
    elements: list[str] | None = param(None, "one feature per element, in this order [elements present, by atomic number]")

    def __post_init__(self) -> None:
        if not self.sigma > 0 or not self.cutoff > 0:
            raise ParameterError(f"gaussian: sigma and cutoff must be > 0 Å, got {self.sigma}, {self.cutoff}")
        self.elements = check_elements("gaussian", self.elements)


class GaussianDescriptor(Descriptor):
    """Smeared atomic density per element (1/Å³)."""

    name = "gaussian"
    Params = GaussianParams

    def n_features(self, structure: Structure) -> int:
        return len(structure.element_order(self.params.elements, self.name))

    def halo(self) -> float:
        return self.params.cutoff

    def compute(self, points, positions, numbers, structure):
        sigma, cutoff = self.params.sigma, self.params.cutoff
        d = points[:, None, :] - positions[None, :, :]
        r2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        g = np.where(r2 < cutoff * cutoff, np.exp(-r2 / (2.0 * sigma * sigma)), 0.0)
        g *= (2.0 * np.pi * sigma * sigma) ** -1.5
        return np.stack(
            [sequential_sum(np.where(numbers == z, g, 0.0), axis=1) for z in structure.element_order(self.params.elements, self.name)],
            axis=1,
        )


@hookimpl
def malaflow_descriptors():
    return [GaussianDescriptor]
