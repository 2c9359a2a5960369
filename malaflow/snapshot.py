"""Snapshots: one atomic configuration with its DFT results, as a Zarr group.

A :class:`Snapshot` is what reader plugins return. In a store it is one Zarr v3 group,
opened as an :class:`xarray.Dataset` with grid arrays chunked over space, so that a
chunk is the unit of work for Dask. Descriptor arrays live in subgroups
``descriptors/<name>`` because each descriptor has its own number of features.

Writes are atomic: a store is written beside its final path under a temporary name
and renamed into place only once it is complete, so an exception or a crash never
leaves a half-written store that looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from .errors import MalaflowError, StoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPATIAL_DIMS = ("x", "y", "z")
DEFAULT_CHUNK = 32
DESCRIPTOR_GROUP = "descriptors"

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

Chunks = int | Mapping[str, int] | None


# --------------------------------------------------------------------------- geometry


def voxel_volume(cell: np.ndarray, grid_shape: tuple[int, int, int]) -> float:
    """Volume in Å³ that one grid point stands for: |det cell| / number of points."""
    return float(abs(np.linalg.det(np.asarray(cell, dtype=float))) / np.prod(grid_shape))


def grid_positions(
    cell: np.ndarray, grid_shape: tuple[int, int, int], indices: np.ndarray
) -> np.ndarray:
    """Cartesian positions (Å) of grid points given by integer indices (n, 3).

    Point (i, j, k) sits at i/nx·a1 + j/ny·a2 + k/nz·a3, the convention of QE's FFT
    grid and of the cube files pp.x writes.
    """
    frac = np.asarray(indices, dtype=float) / np.asarray(grid_shape, dtype=float)
    cell = np.asarray(cell, dtype=float)
    # written out rather than frac @ cell, whose rounding can depend on the array length
    return frac[:, 0:1] * cell[0] + frac[:, 1:2] * cell[1] + frac[:, 2:3] * cell[2]


# --------------------------------------------------------------------------- snapshot


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
        present += [f"descriptors/{n}" for n in self.descriptors]
        lines.append("arrays: " + (", ".join(present) or "none"))
        if self.reference:
            lines.append(
                "reference: " + ", ".join(f"{k} {v:.6g} eV" for k, v in sorted(self.reference.items()))
            )
        return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)


# --------------------------------------------------------------------------- chunks


def spatial_chunks(sizes: Mapping[str, int], chunks: Chunks) -> dict[str, int]:
    """Chunk edge per spatial dim of ``sizes`` ({dim: points}) from a chunk request: an
    int for all three, a mapping for some (the others whole), or None (the default)."""
    if chunks is None:
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, int):
        chunks = {d: chunks for d in SPATIAL_DIMS}
    bad = [d for d in chunks if d not in SPATIAL_DIMS]
    if bad:
        raise MalaflowError(f"chunks may only be given for {SPATIAL_DIMS}, not {bad}")
    out = {}
    for d, n in sizes.items():
        if d in SPATIAL_DIMS:
            c = int(chunks.get(d, n))
            if c < 1:
                raise MalaflowError(f"chunk size for {d!r} must be ≥ 1, got {chunks[d]}")
            out[d] = min(c, int(n))
    return out


def chunk_spec(ds: xr.Dataset | xr.DataArray, chunks: Chunks) -> dict[str, int]:
    """Normalise a chunk request: spatial dims chunked, every other dim whole."""
    return {d: -1 for d in ds.dims} | spatial_chunks(dict(ds.sizes), chunks)


# --------------------------------------------------------------------------- writing


def move_into_place(complete: Path, path: Path) -> None:
    """Rename a finished directory to ``path``, replacing what is there (each step a
    rename, so ``path`` is always either the old or the new version, never a mix)."""
    if path.exists():
        old = path.parent / f".malaflow-old-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        os.rename(complete, path)
        shutil.rmtree(old)
    else:
        os.rename(complete, path)


# who made a temporary: a hash of the host name and the process id, so another process can
# tell a killed run's leftovers (owner gone) from a run in progress
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.malaflow-tmp-.+-h(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer (on this host) no longer runs."""
    removed = []
    for tmp in folder.glob(".malaflow-tmp-*"):
        m = _TEMPORARY.fullmatch(tmp.name)
        if m and m["host"] == _HOST and not _running(int(m["pid"])):
            log.warning("removing %s, left by a run that was killed", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    The temporary sits beside ``path`` (same file system, so the rename is atomic)
    under a hidden name; on any exception it is removed and nothing is left behind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} exists already; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.parent / f".malaflow-tmp-{path.name}-h{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _as_float(arr: Any, dtype: np.dtype | None) -> Any:
    if dtype is None or arr is None or not np.issubdtype(arr.dtype, np.floating):
        return arr
    return arr.astype(dtype)


def write_snapshot(
    snapshot: Snapshot | xr.Dataset,
    path: str | Path,
    chunks: Chunks = None,
    overwrite: bool = False,
    dtype: Any = np.float32,
) -> Path:
    """Write a snapshot as a Zarr v3 group at ``path``, atomically.

    Grid arrays are chunked over space by ``chunks`` (an int for all three spatial
    dims, or a mapping like ``{"x": 32, "y": 32, "z": 16}``; energies and features
    stay whole) and stored as ``dtype`` (float32 by default; ``None`` keeps them).
    """
    if isinstance(snapshot, xr.Dataset):
        snapshot = Snapshot.from_dataset(snapshot)
    path = Path(path)
    ds = snapshot.to_dataset()
    for name in ("ldos", "density", "dos"):
        if name in ds:
            ds[name] = ds[name].copy(data=_as_float(ds[name].data, dtype))
    with atomic_directory(path, overwrite=overwrite) as tmp:
        ds.chunk(chunk_spec(ds, chunks)).to_zarr(
            tmp, mode="w-", zarr_format=3, consolidated=False
        )
        for name, arr in snapshot.descriptors.items():
            _write_descriptor_group(tmp, name, arr, chunks, dtype)
    log.info("wrote snapshot %s", path)
    return path


def _write_descriptor_group(
    store: Path, name: str, arr: xr.DataArray, chunks: Chunks, dtype: Any
) -> None:
    arr = arr.copy(data=_as_float(arr.data, dtype))
    arr.name = name
    ds = arr.to_dataset()
    zarr.open_group(store, mode="a", zarr_format=3).require_group(DESCRIPTOR_GROUP)
    ds.chunk(chunk_spec(ds, chunks)).to_zarr(
        store, group=f"{DESCRIPTOR_GROUP}/{name}", mode="w-", zarr_format=3, consolidated=False
    )


def descriptor_array(
    values: Any, params: Mapping[str, Any] | None = None, plugin: str | None = None,
    params_hash: str | None = None, name: str | None = None,
) -> xr.DataArray:
    """Wrap a (x, y, z, feature) array as a descriptor DataArray with its parameters."""
    if values.ndim != 4:
        raise MalaflowError(f"descriptors must be (x, y, z, feature), got shape {values.shape}")
    attrs = {"params": dict(params or {})}
    if plugin is not None:
        attrs["plugin"] = plugin
    if params_hash is not None:
        attrs["params_hash"] = params_hash
    return xr.DataArray(
        values,
        dims=SPATIAL_DIMS + ("feature",),
        coords={d: np.arange(n) for d, n in zip(SPATIAL_DIMS + ("feature",), values.shape)},
        name=name,
        attrs=attrs,
    )


# --------------------------------------------------------------------------- reading


def _check_store(path: Path) -> None:
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no snapshot store here (no zarr.json); write one first")


def open_snapshot(path: str | Path, chunks: Chunks | str = "stored") -> xr.Dataset:
    """Open a snapshot store lazily: every grid array is dask-backed.

    ``chunks="stored"`` uses the chunking on disk; an int or mapping rechunks.
    """
    path = Path(path)
    _check_store(path)
    ds = xr.open_zarr(path, consolidated=False, chunks={} if chunks == "stored" else None)
    if "malaflow_format" not in ds.attrs:
        raise StoreError(f"{path}: a Zarr group, but not a malaflow snapshot")
    if chunks != "stored":
        ds = ds.chunk(chunk_spec(ds, chunks))
    return ds


def list_descriptors(path: str | Path) -> list[str]:
    """Names of the descriptor arrays stored in a snapshot."""
    path = Path(path)
    _check_store(path)
    root = zarr.open_group(path, mode="r")
    if DESCRIPTOR_GROUP not in root:
        return []
    # hidden names are arrays being written (see malaflow.compute)
    return sorted(k for k in root[DESCRIPTOR_GROUP].group_keys() if not k.startswith("."))


def open_descriptors(path: str | Path, name: str) -> xr.DataArray:
    """The descriptor array ``name`` of a snapshot store, lazily, dims (x, y, z, feature)."""
    names = list_descriptors(path)
    if name not in names:
        raise StoreError(
            f"{path}: no descriptors named {name!r} (stored: {', '.join(names) or 'none'})"
        )
    ds = xr.open_zarr(path, group=f"{DESCRIPTOR_GROUP}/{name}", consolidated=False, chunks={})
    return ds[name]


def load_snapshot(path: str | Path) -> Snapshot:
    """A :class:`Snapshot` with lazy (dask) arrays from a store."""
    descriptors = {n: open_descriptors(path, n) for n in list_descriptors(path)}
    return Snapshot.from_dataset(open_snapshot(path), descriptors=descriptors)
