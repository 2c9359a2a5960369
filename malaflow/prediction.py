"""Prediction with a trained network: lazy and chunk-wise. Each spatial chunk goes
descriptors → network → LDOS on its own, so peak memory follows the chunk size, not the
grid. :class:`Predicts` is the part of :class:`~malaflow.TrainedModel` that does it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import torch
import xarray as xr

from .compute import descriptor_grid
from .descriptors import Descriptor, Structure, check_grid, get_descriptor
from .errors import MalaflowError
from .grid import SPATIAL_DIMS, Chunks
from .snapshot import Snapshot
from .targets import get_target
from .trust import structure_warnings

log = logging.getLogger(__name__)

FORWARD_POINTS = 65536  # points per network call inside one chunk


class Predicts:
    """Prediction from the fields of a trained model (network, scalers, energies, ...)."""

    @property
    def variable(self) -> str:
        """The dataset variable the network predicts (``ldos`` for the LDOS target)."""
        return get_target(self.target).variable

    def descriptor_plugin(self) -> Descriptor:
        return get_descriptor(self.descriptor["plugin"], self.descriptor["params"])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """LDOS (n, energies) in 1/(eV·Å³) from raw descriptors (n, features)."""
        self.network.eval()
        out = np.empty((len(x), len(self.energies)), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(x), FORWARD_POINTS):
                xb = torch.as_tensor(self.x_scaler.transform(x[start : start + FORWARD_POINTS]), dtype=torch.float32)
                out[start : start + len(xb)] = self.y_scaler.inverse(self.network(xb).numpy().astype(np.float64))
        return out

    def outside_training(self, descriptors: xr.DataArray) -> float:
        """Fraction of grid points with some descriptor outside the training range
        (by more than 1 % of that feature's span): where the network extrapolates, and
        its LDOS is not to be trusted. NaN for models saved without the range."""
        if self.input_range is None:
            return float("nan")
        x = descriptors.data
        outside = x.map_blocks(self._outside_block, drop_axis=3, dtype=bool) if isinstance(x, da.Array) \
            else self._outside_block(np.asarray(x))
        return float(outside.mean().compute() if hasattr(outside, "compute") else outside.mean())

    def _outside_block(self, block: np.ndarray) -> np.ndarray:
        lo, hi = (np.asarray(v) for v in self.input_range)
        slack = 0.01 * (hi - lo)
        return ((block < lo - slack) | (block > hi + slack)).any(axis=-1)

    def _forward_block(self, block: np.ndarray) -> np.ndarray:
        shape = block.shape[:3]
        return self.forward(block.reshape(-1, block.shape[3])).reshape(*shape, len(self.energies))

    def grid_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """Grid points along each cell vector at the training data's spacing."""
        lengths = np.linalg.norm(np.asarray(cell, dtype=float), axis=1)
        return tuple(max(1, int(round(length / h))) for length, h in zip(lengths, self.grid_spacing))

    def n_electrons(self, numbers: Sequence[int]) -> float:
        from ase.data import chemical_symbols

        missing = sorted({chemical_symbols[z] for z in numbers} - set(self.valence))
        if missing:
            raise MalaflowError(f"the model was trained without element(s) {missing}; it cannot predict them")
        return float(sum(self.valence[chemical_symbols[z]] for z in numbers))

    def predict(
        self, structure: Any, grid_shape: Sequence[int] | None = None, chunks: Chunks = None,
        descriptors: xr.DataArray | None = None,
    ) -> xr.Dataset:
        """The predicted LDOS of a structure (ase.Atoms, Snapshot, snapshot dataset) as a
        lazy snapshot dataset: ``malaflow.observables`` works on it, ``write_snapshot``
        stores it. ``descriptors`` (x, y, z, feature) may be passed if already computed."""
        s = Structure.from_any(structure)
        grid = check_grid(grid_shape) if grid_shape is not None else (
            tuple(structure.attrs["grid_shape"]) if hasattr(structure, "attrs") and structure.attrs.get("grid_shape")
            else tuple(getattr(structure, "grid_shape", None) or self.grid_for(s.cell))
        )
        if descriptors is None:
            descriptors = descriptor_grid(s, self.descriptor_plugin(), grid_shape=grid, chunks=chunks)
        x = descriptors.data
        if not isinstance(x, da.Array):
            x = da.from_array(np.asarray(x), chunks=(*x.shape[:3], -1))
        if x.shape[:3] != tuple(grid) or x.shape[3] != len(self.x_scaler.shift):
            raise MalaflowError(
                f"descriptors of shape {x.shape} do not fit grid {tuple(grid)} and the model's "
                f"{len(self.x_scaler.shift)} features"
            )
        x = x.rechunk({3: -1})
        ldos = x.map_blocks(self._forward_block, dtype=np.float64, chunks=x.chunks[:3] + ((len(self.energies),),))
        warnings = structure_warnings(self, s.positions, s.cell, tuple(grid))
        for text in warnings:
            log.warning("prediction: %s", text)
        snapshot = Snapshot(
            s.positions, s.numbers, s.cell, s.pbc, grid_shape=grid, energies=self.energies, ldos=ldos,
            temperature=self.temperature, n_electrons=self.n_electrons(s.numbers), code="malaflow-prediction",
            provenance={"model": self.metadata.get("path")},
            attrs={**self.dft, "target": self.target, "warnings": warnings},
        )
        ds = snapshot.to_dataset().rename_vars({"ldos": self.variable})
        if self.input_range is not None:  # from the same descriptor chunks as the LDOS
            ds["extrapolated"] = (SPATIAL_DIMS, x.map_blocks(self._outside_block, drop_axis=3, dtype=bool),
                                  {"description": "descriptors outside the training range"})
        return ds
