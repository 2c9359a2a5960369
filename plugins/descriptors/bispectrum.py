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

from .snap import BispectrumParams, SnapBispectrum, finish_features
from .snap_kernel import bispectrum_block


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

    def compute(self, points, positions, numbers, structure: Structure):
        p = self.params
        order = structure.element_order(p.elements, self.name)
        radii = dict(zip(order, self.per_element("radelem", order)))
        weights = dict(zip(order, self.per_element("wj", order)))
        cut = np.array([2.0 * p.rcutfac * radii[z] for z in numbers])  # LAMMPS: 2·rcutfac·R of the neighbour
        b = bispectrum_block(points, positions, cut, np.array([weights[z] for z in numbers], dtype=float),
                             p.twojmax, p.rfac0, p.rmin0, p.switchflag, p.threads)
        return finish_features(b, p)

    compute_grid = Descriptor.compute_grid  # block by block


@hookimpl
def malaflow_descriptors():
    return [BispectrumDescriptor]
