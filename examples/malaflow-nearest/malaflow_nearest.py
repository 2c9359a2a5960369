"""A complete third-party descriptor plugin for malaflow: distance to the nearest atom.

Install it (``pip install ./examples/malaflow-nearest``) and it appears in
``malaflow descriptors list``; ``malaflow.compute_descriptors(store, "nearest")``
computes it chunk-wise on any Dask worker.
"""

from dataclasses import dataclass

import numpy as np

import malaflow
from malaflow.descriptors import Descriptor, param


@dataclass
class NearestParams:
    cutoff: float = param(3.0, "largest distance looked at (Å); farther atoms count as this far")


class NearestAtom(Descriptor):
    """Distance from each grid point to the nearest atom (Å)."""

    name = "nearest"
    Params = NearestParams

    def n_features(self, structure):
        return 1

    def halo(self):
        return self.params.cutoff

    def compute(self, points, positions, numbers, structure):
        # positions already include every periodic image within `halo` of the points
        d = np.linalg.norm(points[:, None, :] - positions[None, :, :], axis=-1)
        nearest = d.min(axis=1, initial=self.params.cutoff)
        return nearest[:, None]


@malaflow.hookimpl
def malaflow_descriptors():
    return [NearestAtom]
