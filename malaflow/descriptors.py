"""Descriptors: what a descriptor plugin is, and how malaflow runs one over a grid.

A descriptor plugin is one class (subclass :class:`Descriptor`) with a parameter
dataclass. If it is *blockwise* it only writes ``compute(points, positions, numbers,
structure)`` for a batch of Cartesian points and the atoms near them (periodic images
included, found here); malaflow splits the grid into chunks, each chunk into batches,
and sends the chunks to any Dask worker. A plugin that can only do a whole grid at once
(LAMMPS) sets ``blockwise = False`` and writes ``compute_grid`` instead; then one
snapshot is one task, and several snapshots run side by side.

Everything here is deterministic per point: a point's features do not depend on the
chunk or batch it was computed in (see :func:`periodic_images`), so any chunking gives
bit-identical arrays.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from .errors import MalaflowError, ParameterError
from .params import Configurable, describe_params, param  # noqa: F401 (re-exported for plugins)
from .plugins import get_plugin
from .grid import grid_positions
from .store import descriptor_array

log = logging.getLogger(__name__)

DEFAULT_BATCH_POINTS = 4096


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True, eq=False)
class Structure:
    """Atoms in a cell, with positions wrapped into it: what a descriptor needs.

    Small and picklable, so it is what travels to Dask workers (not the snapshot with
    its grid arrays). ``frac`` are fractional coordinates in [0, 1) along periodic axes.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: tuple[bool, bool, bool]
    frac: np.ndarray

    @classmethod
    def build(cls, positions: Any, numbers: Any, cell: Any, pbc: Any = True) -> Structure:
        """Check the input and wrap atoms outside the cell back in (saying so in the log)."""
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        numbers = np.asarray(numbers, dtype=int).reshape(-1)
        cell = np.asarray(cell, dtype=float)
        pbc = tuple(bool(p) for p in np.broadcast_to(pbc, 3))
        if len(positions) == 0:
            raise ParameterError("the structure has no atoms; descriptors need at least one atom")
        if len(numbers) != len(positions):
            raise ParameterError(f"{len(positions)} positions but {len(numbers)} atomic numbers")
        if cell.shape != (3, 3) or not np.isfinite(cell).all():
            raise ParameterError(f"the cell must be a finite 3×3 matrix (rows a1, a2, a3 in Å), got {cell.tolist()}")
        volume = np.linalg.det(cell)
        if abs(volume) < 1e-8:
            raise ParameterError(f"the cell {cell.tolist()} has zero volume")
        if not np.isfinite(positions).all():
            raise ParameterError("atomic positions contain NaN or infinity")
        if numbers.min() < 1 or numbers.max() > 118:
            raise ParameterError(f"atomic numbers must be 1…118, got {sorted(set(numbers.tolist()))}")
        frac = np.linalg.solve(cell.T, positions.T).T
        wrapped = frac.copy()
        for axis in range(3):
            if pbc[axis]:
                wrapped[:, axis] -= np.floor(wrapped[:, axis])
                wrapped[wrapped[:, axis] >= 1.0, axis] = 0.0  # -1e-17 wraps to exactly 1.0
        moved = np.flatnonzero(np.abs(wrapped - frac).max(axis=1) > 1e-12)
        if len(moved):  # along periodic axes the same crystal: worth a note, not a warning
            log.info(
                "%d atom(s) outside the cell (indices %s) wrapped back into it",
                len(moved), ", ".join(map(str, moved[:10])) + (" …" if len(moved) > 10 else ""),
            )
        positions = wrapped[:, 0:1] * cell[0] + wrapped[:, 1:2] * cell[1] + wrapped[:, 2:3] * cell[2]
        return cls(positions, numbers, cell, pbc, wrapped)

    @classmethod
    def from_any(cls, obj: Any) -> Structure:
        """From a :class:`Structure`, :class:`~malaflow.Snapshot`, ``ase.Atoms`` or snapshot dataset."""
        if isinstance(obj, Structure):
            return obj
        if hasattr(obj, "get_positions") and hasattr(obj, "get_cell"):  # ase.Atoms
            return cls.build(obj.get_positions(), obj.numbers, np.asarray(obj.get_cell()), obj.pbc)
        if hasattr(obj, "data_vars"):  # xarray snapshot dataset
            return cls.build(obj["positions"].values, obj["numbers"].values, obj.attrs["cell"], obj.attrs["pbc"])
        if hasattr(obj, "positions") and hasattr(obj, "cell"):  # Snapshot
            return cls.build(obj.positions, obj.numbers, obj.cell, obj.pbc)
        raise MalaflowError(f"cannot take atoms from a {type(obj).__name__}")

    @property
    def elements(self) -> list[int]:
        """Atomic numbers present, ascending: the default element order of descriptors."""
        return sorted(set(self.numbers.tolist()))

    def element_order(self, symbols: Sequence[str] | None, plugin: str) -> list[int]:
        """Atomic numbers in the order a descriptor's ``elements`` parameter gives
        (default: those present, ascending); every element present must be in it."""
        if symbols is None:
            return self.elements
        from ase.data import atomic_numbers, chemical_symbols

        order = [atomic_numbers[e] for e in symbols]
        missing = sorted(set(self.elements) - set(order))
        if missing:
            raise ParameterError(
                f"{plugin}: the structure has element(s) {[chemical_symbols[z] for z in missing]} "
                f"not in elements={list(symbols)}"
            )
        return order

    def heights(self) -> np.ndarray:
        """Distance between opposite faces of the cell, per axis (Å)."""
        a = self.cell
        volume = abs(np.linalg.det(a))
        return np.array([volume / np.linalg.norm(np.cross(a[(i + 1) % 3], a[(i + 2) % 3])) for i in range(3)])


def check_grid(grid_shape: Sequence[int]) -> tuple[int, int, int]:
    """A grid shape of three positive integers, or a clear error."""
    try:
        shape = tuple(int(n) for n in grid_shape)
    except (TypeError, ValueError):
        raise ParameterError(f"the grid shape must be three integers, got {grid_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ParameterError(f"the grid must have three positive sizes (nx, ny, nz), got {tuple(grid_shape)}")
    return shape


def periodic_images(
    structure: Structure, frac_lo: np.ndarray, frac_hi: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, atomic numbers and atom indices of all atom images that can lie within
    ``cutoff`` of a point whose fractional coordinates are inside [frac_lo, frac_hi].

    A point and an atom closer than r differ by less than r/h along fractional axis i
    (h the distance between the cell's faces), so the search box is widened by that.
    Images come in a fixed order — by lattice shift (n1, n2, n3), then atom index — so
    the atoms within the cutoff of a point appear in the same relative order whatever
    box they were found for; with an order-preserving sum that makes results
    independent of chunking.
    """
    margin = cutoff / structure.heights()
    lo = np.asarray(frac_lo, dtype=float) - margin
    hi = np.asarray(frac_hi, dtype=float) + margin
    ranges = [
        range(math.floor(lo[i]) - 1, math.ceil(hi[i]) + 1) if structure.pbc[i] else range(0, 1)
        for i in range(3)
    ]
    shifts = np.array(list(itertools.product(*ranges)), dtype=float)  # lexicographic
    frac = structure.frac[None, :, :] + shifts[:, None, :]  # (shift, atom, 3)
    inside = np.all((frac >= lo) & (frac <= hi), axis=2)
    shift_idx, atom_idx = np.nonzero(inside)  # row-major: shift first, then atom
    s = shifts[shift_idx]
    cell = structure.cell
    positions = structure.positions[atom_idx] + s[:, 0:1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]
    return positions, structure.numbers[atom_idx], atom_idx


# --------------------------------------------------------------------------- plugin base


class Descriptor(Configurable):
    """Base class of descriptor plugins.

    Subclasses set ``name``, ``Params`` (a dataclass whose fields have defaults) and
    either ``compute`` (blockwise) or ``compute_grid`` with ``blockwise = False``; they
    say how many features they give with ``n_features`` and, if blockwise, how far
    atoms reach with ``halo``. Parameters are checked and normalised on construction,
    so equal physics gives an equal :meth:`params_hash`.
    """

    kind = "descriptor"
    blockwise: ClassVar[bool] = True
    #: Dask resources a task of this plugin asks for (e.g. {"GPU": 1}); see cluster docs.
    resources: ClassVar[dict[str, float] | None] = None
    #: The feature definition this plugin computes ("" = its own name). Plugins that
    #: share one give the same features for the same parameters (their tests say how
    #: closely) in the same order, so stored arrays, trained models and predictions
    #: treat them as one descriptor: LAMMPS's features serve a model that predicts
    #: with the compiled kernel, and the other way round.
    features: ClassVar[str] = ""
    #: Devices ("cpu", "cuda") on which this implementation of its features is the one
    #: to use when a prediction picks the fastest (see :func:`malaflow.implementations.fastest`).
    preferred_on: ClassVar[tuple[str, ...]] = ()

    @property
    def feature_set(self) -> str:
        return self.features or self.name

    def hash_key(self) -> str:
        return self.feature_set

    def store_name(self) -> str:
        """Name of the array in a snapshot store: the feature set's name for the default
        parameters, the name plus a hash otherwise (so parameter sets sit side by side)."""
        if self.params_dict() == type(self)().params_dict():
            return self.feature_set
        return f"{self.feature_set}-{self.params_hash()[:8]}"

    def as_dataarray(self, values: Any) -> xr.DataArray:
        """(x, y, z, feature) values as the DataArray a store holds, with this plugin's parameters."""
        return descriptor_array(values, self.params_dict(), self.name, self.params_hash(), self.store_name(),
                                self.feature_set)

    def n_features(self, structure: Structure) -> int:
        raise NotImplementedError

    def halo(self) -> float:
        """Å: atoms farther than this from a point do not change its features."""
        raise NotImplementedError

    def compute(
        self, points: np.ndarray, positions: np.ndarray, numbers: np.ndarray, structure: Structure
    ) -> np.ndarray:
        """Features (n_points, n_features) at Cartesian ``points`` (Å) from the atoms at
        ``positions`` (periodic images included; all atoms within :meth:`halo` of every
        point are there, and possibly more)."""
        raise NotImplementedError

    def compute_with_pullback(
        self, points: np.ndarray, positions: np.ndarray, numbers: np.ndarray, structure: Structure,
        features: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Features at ``points`` (as :meth:`compute`) and their pullback: a function
        mapping ∂E/∂features (n_points, n_features) of any scalar E to ∂E/∂positions
        (n_positions, 3). ``features``, when given, are this feature set's values at
        ``points`` (computed earlier): a plugin may use them instead of computing again.
        Plugins whose features are differentiable in the atomic positions implement it;
        forces need one implementation of the feature set that does."""
        raise NotImplementedError

    def compute_grid(self, structure: Structure, grid_shape: tuple[int, int, int]) -> np.ndarray:
        """Features (nx, ny, nz, n_features) on the whole grid of the cell."""
        return compute_block(self, structure, grid_shape, tuple(slice(0, n) for n in grid_shape))


def check_elements(plugin: str, elements: Sequence[str] | None) -> list[str] | None:
    """An ``elements`` parameter: None, or a non-empty list of chemical symbols."""
    if elements is None:
        return None
    from ase.data import atomic_numbers

    if isinstance(elements, str) or not elements or any(e not in atomic_numbers for e in elements):
        raise ParameterError(f"{plugin}: elements must be a list of chemical symbols, got {elements!r}")
    return list(elements)


def get_descriptor(plugin: str | Descriptor, params: Mapping[str, Any] | None = None) -> Descriptor:
    """A descriptor instance from a registered plugin name (or pass one through)."""
    if isinstance(plugin, Descriptor):
        if params:
            raise ParameterError("pass parameters either in the descriptor instance or as params, not both")
        return plugin
    return get_plugin("descriptors", plugin)(params)  # the registry admits Descriptor subclasses only


# --------------------------------------------------------------------------- blocks


def point_batches(
    descriptor: Descriptor, structure: Structure, grid_shape: tuple[int, int, int],
    block: tuple[slice, slice, slice], batch_points: int = DEFAULT_BATCH_POINTS,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """A block of grid points in batches of at most ``batch_points`` consecutive points
    (in the block's C order), each with its own neighbour search, which bounds memory
    whatever the block size: (where in the block, points, image positions, their
    atomic numbers, their atom indices) per batch."""
    idx = np.stack(
        np.meshgrid(*[np.arange(n)[s] for s, n in zip(block, grid_shape)], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    grid = np.asarray(grid_shape, dtype=float)
    halo = float(descriptor.halo())
    for start in range(0, len(idx), max(1, int(batch_points))):
        frac = idx[start : start + batch_points] / grid
        points = grid_positions(structure.cell, grid_shape, idx[start : start + batch_points])
        positions, numbers, atoms = periodic_images(structure, frac.min(axis=0), frac.max(axis=0), halo)
        yield slice(start, start + len(points)), points, positions, numbers, atoms


def compute_block(
    descriptor: Descriptor,
    structure: Structure,
    grid_shape: tuple[int, int, int],
    block: tuple[slice, slice, slice],
    batch_points: int = DEFAULT_BATCH_POINTS,
) -> np.ndarray:
    """Features of one block of grid points, (bx, by, bz, n_features), from the atoms alone."""
    if not descriptor.blockwise:
        raise MalaflowError(f"descriptor {descriptor.name!r} computes whole grids only, not blocks")
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(block, grid_shape))
    n_features = descriptor.n_features(structure)
    out = np.empty((int(np.prod(shape)), n_features), dtype=float)
    for where, points, positions, numbers, _ in point_batches(descriptor, structure, grid_shape, block, batch_points):
        out[where] = check_features(descriptor, descriptor.compute(points, positions, numbers, structure),
                                    len(points), n_features)
    return out.reshape(*shape, n_features)


def check_features(descriptor: Descriptor, values: Any, n_points: int, n_features: int) -> np.ndarray:
    """A plugin's features as a float array, refused if not (n_points, n_features)."""
    values = np.asarray(values, dtype=float)
    if values.shape != (n_points, n_features):
        raise MalaflowError(
            f"descriptor {descriptor.name!r} returned shape {values.shape} for {n_points} "
            f"points; it declares {n_features} features"
        )
    return values


def grid_blocks(
    grid_shape: tuple[int, int, int], chunks: tuple[int, int, int]
) -> list[tuple[slice, slice, slice]]:
    """The blocks of a grid cut into chunks (the last along each axis may be smaller)."""
    axes = [[slice(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(grid_shape, chunks)]
    return list(itertools.product(*axes))


def sequential_sum(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum along ``axis`` strictly left to right.

    Adding an exact 0.0 then changes nothing, so a sum over a superset of neighbours
    with zeros beyond the cutoff equals the sum over the exact set, bit for bit —
    numpy's pairwise ``sum`` would regroup the terms by array length instead.
    """
    if values.shape[axis] == 0:
        return np.zeros(np.delete(values.shape, axis if axis >= 0 else values.ndim + axis))
    return np.take(np.cumsum(values, axis=axis), -1, axis=axis)
