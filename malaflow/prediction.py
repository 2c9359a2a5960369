"""Prediction with a trained network: lazy and chunk-wise. Each spatial chunk goes
descriptors → network → LDOS on its own, so peak memory follows the chunk size, not the
grid. :class:`Predicts` is the part of :class:`~malaflow.TrainedModel` that does it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr

from .compute import descriptor_grid
from .descriptors import Descriptor, Structure, check_grid, get_descriptor
from .implementations import fastest
from .implementations import implementation as implementation_named
from .devices import check_device_name, torch_device, torch_dtype
from .errors import MalaflowError
from .runtime import session_client, task_resources
from .grid import SPATIAL_DIMS, Chunks
from .snapshot import Snapshot
from .targets import get_target
from .trust import structure_warnings

log = logging.getLogger(__name__)

FORWARD_POINTS = 65536  # points per network call inside one chunk

#: copies of networks on GPUs, per process: (id of the network, device) → module
_ON_DEVICE: dict[tuple[int, str], torch.nn.Module] = {}


class Predicts:
    """Prediction from the fields of a trained model (network, scalers, energies, ...)."""

    @property
    def variable(self) -> str:
        """The dataset variable the network predicts (``ldos`` for the LDOS target)."""
        return get_target(self.target).variable

    def descriptor_plugin(self, implementation: str | None = None) -> Descriptor:
        """The descriptor the model was trained on — computed by the plugin that computed
        its training data, or by ``implementation``, another plugin of the same features."""
        trained = get_descriptor(self.descriptor["plugin"], self.descriptor["params"])
        return trained if implementation is None else implementation_named(trained, implementation)

    def network_on(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The network on ``device`` in ``dtype`` (copied there once per process, device
        and dtype; float64 copies make the energy a smooth function for forces)."""
        if device.type == "cpu" and dtype == torch.float32:
            return self.network.eval()
        key = (id(self.network), str(device), str(dtype))
        if key not in _ON_DEVICE:
            _ON_DEVICE[key] = copy.deepcopy(self.network).to(device=device, dtype=dtype).eval()
        return _ON_DEVICE[key]

    def ldos_of_features(self, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        """The differentiable map from raw descriptors (points, features) to the LDOS
        (points, energies) on ``device``: scaling, network, unscaling (forces backpropagate
        through it)."""
        network = self.network_on(device, dtype)
        x_shift, x_scale, y_shift, y_scale = (torch.as_tensor(v, dtype=dtype, device=device) for v in (
            self.x_scaler.shift, self.x_scaler.scale, self.y_scaler.shift, self.y_scaler.scale))
        return lambda x: network((x - x_shift) / x_scale) * y_scale + y_shift

    def forward(self, x: np.ndarray, device: str = "cpu", precision: str = "float32") -> np.ndarray:
        """LDOS (n, energies) in 1/(eV·Å³) from raw descriptors (n, features), on
        ``device`` ("auto": CUDA if torch sees one): the inputs go there once, the network
        runs in batches of FORWARD_POINTS on it, the LDOS comes back once."""
        dev, dtype = torch_device(device, "prediction"), torch_dtype(precision, "prediction")
        network = self.network_on(dev, dtype)
        inputs = torch.as_tensor(self.x_scaler.transform(x), dtype=dtype).to(dev)
        out = torch.empty((len(x), len(self.energies)), dtype=dtype, device=dev)
        with torch.no_grad():
            for start in range(0, len(x), FORWARD_POINTS):
                out[start : start + FORWARD_POINTS] = network(inputs[start : start + FORWARD_POINTS])
        return self.y_scaler.inverse(out.cpu().numpy().astype(np.float64))

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

    def _forward_block(self, block: np.ndarray, device: str = "cpu", precision: str = "float32") -> np.ndarray:
        shape = block.shape[:3]
        return self.forward(block.reshape(-1, block.shape[3]), device, precision).reshape(*shape, len(self.energies))

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
        descriptors: xr.DataArray | None = None, device: str = "auto", implementation: str | None = None,
        precision: str = "float32", with_descriptors: bool = False, warn: bool = True,
    ) -> xr.Dataset:
        """The predicted LDOS of a structure (ase.Atoms, Snapshot, snapshot dataset) as a
        lazy snapshot dataset: ``malaflow.observables`` works on it, ``write_snapshot``
        stores it. ``descriptors`` (x, y, z, feature) may be passed if already computed.

        Each chunk runs descriptors → network on the worker computing it: the network on
        ``device`` ("auto": the worker's GPU if torch sees one, "cpu", "cuda[:N]"), the
        descriptors by the fastest implementation of the model's features there (the
        torch plugin on a GPU, the compiled kernel on a CPU) unless ``implementation``
        names one. On a cluster offering the ``GPU`` resource the tasks ask for it.
        ``precision``: the network's arithmetic (float32, or float64 as forces use).
        ``with_descriptors``: the descriptors become a variable of the dataset too (the
        same chunks the LDOS is computed from; persisting the dataset keeps both).
        ``warn``: log what makes the prediction doubtful (its ``warnings`` attribute holds it
        either way; an ensemble's members leave the logging to the ensemble)."""
        check_device_name(device, "prediction")
        torch_dtype(precision, "prediction")
        s = Structure.from_any(structure)
        grid = check_grid(grid_shape) if grid_shape is not None else (
            tuple(structure.attrs["grid_shape"]) if hasattr(structure, "attrs") and structure.attrs.get("grid_shape")
            else tuple(getattr(structure, "grid_shape", None) or self.grid_for(s.cell))
        )
        client = session_client()
        resources = task_resources(client, {"GPU": 1}) if client is not None and device != "cpu" else None
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            if descriptors is None:
                descriptor = fastest(self.descriptor_plugin(), device) if implementation is None \
                    else self.descriptor_plugin(implementation)
                descriptors = descriptor_grid(s, descriptor, grid_shape=grid, chunks=chunks)
            return self._dataset(s, grid, descriptors, device, precision, with_descriptors, warn)

    def _dataset(self, s: Structure, grid: tuple[int, int, int], descriptors: xr.DataArray, device: str,
                 precision: str, with_descriptors: bool, warn: bool) -> xr.Dataset:
        """The prediction dataset: LDOS (and the extrapolated points) over descriptor chunks."""
        x = descriptors.data
        if not isinstance(x, da.Array):
            x = da.from_array(np.asarray(x), chunks=(*x.shape[:3], -1))
        if x.shape[:3] != tuple(grid) or x.shape[3] != len(self.x_scaler.shift):
            raise MalaflowError(
                f"descriptors of shape {x.shape} do not fit grid {tuple(grid)} and the model's "
                f"{len(self.x_scaler.shift)} features"
            )
        x = x.rechunk({3: -1})
        ldos = x.map_blocks(self._forward_block, device, precision, dtype=np.float64, chunks=x.chunks[:3] + ((len(self.energies),),))
        warnings = structure_warnings(self, s.positions, s.cell, tuple(grid))
        for text in warnings if warn else []:
            log.warning("prediction: %s", text)
        snapshot = Snapshot(
            s.positions, s.numbers, s.cell, s.pbc, grid_shape=grid, energies=self.energies, ldos=ldos,
            temperature=self.temperature, n_electrons=self.n_electrons(s.numbers), code="malaflow-prediction",
            provenance={"model": self.metadata.get("path")},
            attrs={**self.dft, "target": self.target, "warnings": warnings},
        )
        ds = snapshot.to_dataset().rename_vars({"ldos": self.variable})
        if with_descriptors:
            ds["descriptors"] = ((*SPATIAL_DIMS, "feature"), x)
        if self.input_range is not None:  # from the same descriptor chunks as the LDOS
            ds["extrapolated"] = (SPATIAL_DIMS, x.map_blocks(self._outside_block, drop_axis=3, dtype=bool),
                                  {"description": "descriptors outside the training range"})
        return ds
