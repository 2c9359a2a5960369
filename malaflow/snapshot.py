"""Snapshots: one atomic configuration with its DFT results.

A :class:`Snapshot` is what reader plugins return and what a prediction is made of;
:meth:`Snapshot.to_dataset` is the one constructor of the snapshot dataset that stores
(:mod:`malaflow.store`), predictions and observables work on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .errors import MalaflowError, StoreError
from .grid import SPATIAL_DIMS

FORMAT_VERSION = 1

UNITS = {
    "ldos": "1/(eV*Angstrom^3)",
    "density": "1/Angstrom^3",
    "dos": "1/eV",
    "energy": "eV",
    "positions": "Angstrom",
    "cell": "Angstrom",
    "temperature": "K",
    "fermi_energy": "eV",
    "reference": "eV",
}


@dataclass
class Snapshot:
    """One atomic configuration and what a DFT code computed for it.

    Lengths in Å, energies in eV, LDOS in 1/(eV·Å³), density in 1/Å³, T in K.
    ``reference`` holds the DFT reference energies in eV (``band_energy``,
    ``total_energy``, ``entropy_contribution``, ...); ``attrs`` any further
    JSON-serialisable metadata (cutoffs, smearing, LDOS broadening, ...).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: tuple[bool, bool, bool] = (True, True, True)
    grid_shape: tuple[int, int, int] | None = None
    energies: np.ndarray | None = None
    ldos: Any = None
    density: Any = None
    dos: Any = None
    eigenvalues: np.ndarray | None = None  # Kohn–Sham eigenvalues in eV, (k point, band)
    k_weights: np.ndarray | None = None  # per k point, summing to 2 for a spin-unpolarised run
    descriptors: dict[str, xr.DataArray] = field(default_factory=dict)
    temperature: float | None = None
    fermi_energy: float | None = None
    n_electrons: float | None = None
    reference: dict[str, float] = field(default_factory=dict)
    code: str = "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        self.numbers = np.asarray(self.numbers, dtype=int).reshape(-1)
        self.cell = np.asarray(self.cell, dtype=float)
        self.pbc = tuple(bool(p) for p in np.broadcast_to(self.pbc, 3))
        if self.cell.shape != (3, 3):
            raise MalaflowError(f"cell must be 3×3 (rows a1, a2, a3 in Å), got {self.cell.shape}")
        if len(self.numbers) != len(self.positions):
            raise MalaflowError(
                f"{len(self.positions)} positions but {len(self.numbers)} atomic numbers"
            )
        if self.energies is not None:
            self.energies = np.asarray(self.energies, dtype=float).reshape(-1)
        if (self.eigenvalues is None) != (self.k_weights is None):
            raise MalaflowError("eigenvalues and k_weights come together (one weight per k point)")
        if self.eigenvalues is not None:
            self.eigenvalues = np.asarray(self.eigenvalues, dtype=float)
            self.k_weights = np.asarray(self.k_weights, dtype=float).reshape(-1)
            if self.eigenvalues.ndim != 2 or len(self.eigenvalues) != len(self.k_weights):
                raise MalaflowError(f"eigenvalues must be (k points, bands) with one weight per k point, got "
                                    f"{self.eigenvalues.shape} and {len(self.k_weights)} weights")
        for name in ("ldos", "density"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if self.grid_shape is None:
                self.grid_shape = tuple(int(n) for n in arr.shape[:3])
            if tuple(arr.shape[:3]) != tuple(self.grid_shape):
                raise MalaflowError(
                    f"{name} has grid {tuple(arr.shape[:3])}, the snapshot's grid is "
                    f"{tuple(self.grid_shape)}"
                )
        if self.ldos is not None:
            if self.energies is None or self.ldos.shape[3:] != self.energies.shape:
                raise MalaflowError(
                    f"ldos has shape {self.ldos.shape}; it needs an energy grid of "
                    f"{self.ldos.shape[3:]} points, got "
                    f"{None if self.energies is None else self.energies.shape}"
                )
        if self.grid_shape is not None:
            self.grid_shape = tuple(int(n) for n in self.grid_shape)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def elements(self) -> list[str]:
        """Chemical symbols present, sorted."""
        from ase.data import chemical_symbols

        return sorted({chemical_symbols[z] for z in self.numbers})

    @property
    def atoms(self):
        """The configuration as an :class:`ase.Atoms`."""
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    def to_dataset(self) -> xr.Dataset:
        """The root-group dataset (descriptors are kept in :attr:`descriptors`)."""
        coords: dict[str, Any] = {"atom": np.arange(self.n_atoms)}
        if self.grid_shape is not None:
            for dim, n in zip(SPATIAL_DIMS, self.grid_shape):
                coords[dim] = np.arange(n)
        if self.energies is not None:
            coords["energy"] = ("energy", self.energies, {"units": "eV"})
        data_vars: dict[str, Any] = {
            "positions": (("atom", "xyz"), self.positions, {"units": UNITS["positions"]}),
            "numbers": (("atom",), self.numbers),
        }
        if self.ldos is not None:
            data_vars["ldos"] = (SPATIAL_DIMS + ("energy",), self.ldos, {"units": UNITS["ldos"]})
        if self.density is not None:
            data_vars["density"] = (SPATIAL_DIMS, self.density, {"units": UNITS["density"]})
        if self.dos is not None:
            data_vars["dos"] = (("energy",), self.dos, {"units": UNITS["dos"]})
        if self.eigenvalues is not None:
            data_vars["eigenvalues"] = (("kpoint", "band"), self.eigenvalues, {"units": "eV"})
            data_vars["k_weights"] = (("kpoint",), self.k_weights)
        attrs = {
            "malaflow_format": FORMAT_VERSION,
            "cell": self.cell.tolist(),
            "pbc": list(self.pbc),
            "grid_shape": None if self.grid_shape is None else list(self.grid_shape),
            "temperature": self.temperature,
            "fermi_energy": self.fermi_energy,
            "n_electrons": self.n_electrons,
            "reference": dict(self.reference),
            "code": self.code,
            "provenance": dict(self.provenance),
            "units": UNITS,
            **self.attrs,
        }
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, descriptors: Mapping[str, xr.DataArray] | None = None
    ) -> Snapshot:
        """Inverse of :meth:`to_dataset`; arrays stay lazy if the dataset is."""
        if "malaflow_format" not in ds.attrs:
            raise StoreError("this dataset is not a malaflow snapshot (no 'malaflow_format' attr)")
        attrs = dict(ds.attrs)
        known = {
            "malaflow_format", "cell", "pbc", "grid_shape", "temperature", "fermi_energy",
            "n_electrons", "reference", "code", "provenance", "units",
        }
        grid = attrs.get("grid_shape")
        return cls(
            positions=ds["positions"].values,
            numbers=ds["numbers"].values,
            cell=np.array(attrs["cell"]),
            pbc=tuple(attrs["pbc"]),
            grid_shape=None if grid is None else tuple(grid),
            energies=ds["energy"].values if "energy" in ds.coords else None,
            ldos=ds["ldos"].data if "ldos" in ds else None,
            density=ds["density"].data if "density" in ds else None,
            dos=ds["dos"].data if "dos" in ds else None,
            eigenvalues=ds["eigenvalues"].values if "eigenvalues" in ds else None,
            k_weights=ds["k_weights"].values if "k_weights" in ds else None,
            descriptors=dict(descriptors or {}),
            temperature=attrs.get("temperature"),
            fermi_energy=attrs.get("fermi_energy"),
            n_electrons=attrs.get("n_electrons"),
            reference=dict(attrs.get("reference") or {}),
            code=attrs.get("code", "unknown"),
            provenance=dict(attrs.get("provenance") or {}),
            attrs={k: v for k, v in attrs.items() if k not in known},
        )

    def summary(self) -> str:
        """A few lines a person reads to know what this snapshot holds."""
        lines = [
            f"{self.n_atoms} atoms ({', '.join(self.elements)}), code {self.code}, "
            f"T = {_fmt(self.temperature, '.1f')} K, "
            f"N_e = {_fmt(self.n_electrons, 'g')}, E_F = {_fmt(self.fermi_energy, '.4f')} eV",
            f"cell volume {abs(np.linalg.det(self.cell)):.3f} Å³, grid "
            f"{'×'.join(map(str, self.grid_shape)) if self.grid_shape else 'none'}",
        ]
        if self.energies is not None:
            e = self.energies
            lines.append(f"LDOS on {len(e)} energies {e[0]:g} … {e[-1]:g} eV")
        present = [n for n in ("ldos", "density", "dos") if getattr(self, n) is not None]
        if self.eigenvalues is not None:
            present.append("eigenvalues ({} k points × {} bands)".format(*self.eigenvalues.shape))
        present += [f"descriptors/{n}" for n in self.descriptors]
        lines.append("arrays: " + (", ".join(present) or "none"))
        if self.reference:
            lines.append(
                "reference: " + ", ".join(f"{k} {v:.6g}{'' if k.startswith('n_electrons') else ' eV'}"
                                          for k, v in sorted(self.reference.items()))
            )
        return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)
