"""``bispectrum``: the SNAP bispectrum on any block of grid points, by the compiled CPU
kernel of :mod:`.snap_kernel` — LAMMPS's features (the feature set of :mod:`.snap`),
chunk by chunk, so one snapshot spreads over every worker of a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from malaflow import hookimpl
from malaflow.descriptors import Descriptor, Structure, param
from malaflow.errors import ParameterError

from .snap import (
    BispectrumParams, SnapBispectrum, bzero, finish_features, finish_features_adjoint, n_bispectrum,
)
from .snap_kernel import bispectrum_block
from .snap_pullback import pullback_block


@dataclass
class BispectrumCompiledParams(BispectrumParams):
    threads: int = param(1, "threads of one task (tiles of points); Dask runs tasks side by side", hashed=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threads < 1:
            raise ParameterError(f"bispectrum: threads must be ≥ 1, got {self.threads}")


class BispectrumDescriptor(SnapBispectrum):
    """SNAP bispectrum at any block of grid points: compiled CPU kernel, LAMMPS's features."""

    name = "bispectrum"
    Params = BispectrumCompiledParams
    blockwise = True
    preferred_on = ("cpu",)

    def _atoms(self, numbers, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom cutoff (LAMMPS: 2·rcutfac·R of the neighbour's element) and weight."""
        p = self.params
        order = structure.element_order(p.elements, self.name)
        radii = dict(zip(order, self.per_element("radelem", order)))
        weights = dict(zip(order, self.per_element("wj", order)))
        return (np.array([2.0 * p.rcutfac * radii[z] for z in numbers], dtype=float),
                np.array([weights[z] for z in numbers], dtype=float))

    def _raw(self, points, positions, numbers, structure: Structure) -> np.ndarray:
        p = self.params
        cut, weight = self._atoms(numbers, structure)
        return bispectrum_block(points, positions, cut, weight, p.twojmax, p.rfac0, p.rmin0, p.switchflag, p.threads)

    def compute(self, points, positions, numbers, structure: Structure):
        return finish_features(self._raw(points, positions, numbers, structure), self.params)

    def compute_with_pullback(self, points, positions, numbers, structure: Structure, features=None):
        """Features and their pullback by the compiled adjoint kernel (:mod:`.snap_pullback`);
        with ``features`` given, the raw components are read off them, not recomputed."""
        p = self.params
        if features is None:
            raw = self._raw(points, positions, numbers, structure)
        else:
            raw = np.array(features[:, : n_bispectrum(p.twojmax)], dtype=float)
            if p.bzeroflag:
                raw += bzero(p.twojmax)
        cut, weight = self._atoms(numbers, structure)

        def pullback(grad_features: np.ndarray) -> np.ndarray:
            seed = finish_features_adjoint(raw, np.asarray(grad_features, dtype=float), p)
            return pullback_block(points, positions, cut, weight, p.twojmax, p.rfac0, p.rmin0, p.switchflag,
                                  seed, p.threads)

        return finish_features(raw, p), pullback

    compute_grid = Descriptor.compute_grid  # block by block


@hookimpl
def malaflow_descriptors():
    return [BispectrumDescriptor]
