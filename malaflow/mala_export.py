"""A snapshot in MALA's file layout, so MALA trains and tests on exactly malaflow's data.

``NAME.in.npy``: (x, y, z, 3 + features) — each grid point's Cartesian coordinates (Å), as
MALA's own SNAP files carry them, then the descriptors; ``NAME.out.npy``: the LDOS in
1/(eV·Å³); ``NAME.info.json``: MALA's "additional calculation data" (atoms, voxel, grid,
temperature, DFT Fermi level and energies in eV, QE settings), the file MALA's targets read
with ``read_additional_calculation_data`` and its ``Tester`` compares against;
``NAME.pp.ldos.in``: the energy grid and broadening as the pp.x input that makes such an
LDOS (MALA takes the grid from its parameters). malaflow's ``mala`` reader reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .atomic import atomic_directory
from .errors import StoreError
from .grid import grid_positions
from .store import list_descriptors, open_descriptors, open_snapshot

#: malaflow's reference keys under MALA's names
REFERENCE_NAMES = {
    "band_energy": "band_energy_dft_calculation",
    "total_energy": "total_energy_dft_calculation",
    "entropy_contribution": "entropy_contribution_dft_calculation",
    "one_electron_contribution": "one_electron_contribution",
    "hartree_contribution": "hartree_contribution",
    "xc_contribution": "xc_contribution",
    "ewald_contribution": "ewald_contribution",
    "n_electrons_from_eigenvalues": "number_of_electrons_from_eigenvals",
}


def export_mala(store: str | Path, folder: str | Path, name: str, descriptor: str = "bispectrum") -> list[Path]:
    """Write the snapshot store ``store`` as ``folder/name.{in,out}.npy``, ``name.info.json`` and
    ``name.pp.ldos.in`` (the descriptors stored as ``descriptor``); all appear together or none."""
    store, folder = Path(store), Path(folder)
    ds = open_snapshot(store)
    if descriptor not in list_descriptors(store):
        raise StoreError(f"{store}: no '{descriptor}' descriptors to export (stored: "
                         f"{', '.join(list_descriptors(store)) or 'none'}); compute them first")
    if "ldos" not in ds:
        raise StoreError(f"{store}: no LDOS to export")
    features = open_descriptors(store, descriptor)
    cell = np.asarray(ds.attrs["cell"], dtype=float)
    grid = tuple(ds.attrs["grid_shape"])
    indices = np.stack(np.meshgrid(*[np.arange(n) for n in grid], indexing="ij"), axis=-1).reshape(-1, 3)
    coordinates = grid_positions(cell, grid, indices).reshape(*grid, 3)
    inputs = np.concatenate([coordinates, features.values], axis=-1).astype(np.float32)  # as MALA writes it
    info = info_json(ds, dict(features.attrs.get("params", {})))
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}{suffix}" for suffix in (".in.npy", ".out.npy", ".info.json", ".pp.ldos.in")]
    with atomic_directory(folder / f".{name}.export", overwrite=True) as tmp:
        tmp.mkdir()
        np.save(tmp / paths[0].name, inputs)
        np.save(tmp / paths[1].name, np.asarray(ds["ldos"].values, dtype=np.float32))
        (tmp / paths[2].name).write_text(json.dumps(info, indent=4))
        (tmp / paths[3].name).write_text(pp_ldos_input(ds))
    staged = folder / f".{name}.export"
    for path in paths:
        (staged / path.name).replace(path)
    staged.rmdir()
    return paths


def pp_ldos_input(ds: xr.Dataset) -> str:
    """The energy grid and broadening of the LDOS as the pp.x input that makes it: MALA keeps
    the grid in its run parameters, not beside the data, so this file says what it is."""
    e = ds["energy"].values
    step = float(np.diff(e).mean()) if len(e) > 1 else 0.0
    lines = ["&inputpp", " plot_num=3,", f" emin={e[0]:.10g},", f" emax={e[-1]:.10g},", f" delta_e={step:.10g},"]
    if ds.attrs.get("ldos_broadening"):
        lines.append(f" degauss_ldos={ds.attrs['ldos_broadening']:.10g},")
    if ds.attrs.get("ldos_broadening_kind") == "gaussian":
        lines.append(" use_gauss_ldos=.true.,")
    return "\n".join(lines + ["/", ""])


def info_json(ds: xr.Dataset, descriptor_params: dict[str, Any]) -> dict[str, Any]:
    """MALA's additional calculation data for a snapshot (energies eV, degauss Ry)."""
    attrs = ds.attrs
    cell = np.asarray(attrs["cell"], dtype=float)
    grid = list(attrs["grid_shape"])
    n_atoms = ds.sizes["atom"]
    info: dict[str, Any] = {
        "fermi_energy_dft": attrs.get("fermi_energy"),
        "temperature": attrs.get("temperature"),
        "number_of_electrons_exact": attrs.get("n_electrons"),
        "grid_dimensions": grid,
        "electrons_per_atom": None if attrs.get("n_electrons") is None else attrs["n_electrons"] / n_atoms,
        "ibrav": attrs.get("ibrav", 0),
        "ecutwfc": attrs.get("ecutwfc_ry", attrs.get("ecutwfc")),
        "ecutrho": attrs.get("ecutrho_ry", attrs.get("ecutrho")),
        "degauss": attrs.get("degauss_ry", attrs.get("degauss")),
        "pseudopotentials": attrs.get("pseudopotentials", {}),
        "voxel": {"array": (cell / np.asarray(grid, dtype=float)[:, None]).tolist()},
        "atoms": {"numbers": ds["numbers"].values.tolist(), "positions": ds["positions"].values.tolist(),
                  "cell": cell.tolist(), "pbc": list(attrs.get("pbc", (True, True, True)))},
        "descriptor_parameters": descriptor_params,
    }
    reference = attrs.get("reference") or {}
    info.update({mala: reference[ours] for ours, mala in REFERENCE_NAMES.items() if ours in reference})
    if "dft_forces" in attrs:
        info["atomic_forces_dft"] = attrs["dft_forces"]
    return info
