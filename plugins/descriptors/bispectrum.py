"""``bispectrum``: SNAP bispectrum components on the grid, computed by LAMMPS.

LAMMPS's ``compute sna/grid`` does the whole grid of one snapshot in one call, so this
plugin is not blockwise: one snapshot is one task (several snapshots run as parallel
tasks on a cluster). Defaults are MALA's; with them the features equal MALA's
``*.in.npy`` files. The torch implementation (``bispectrum_torch``) computes blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from malaflow import hookimpl
from malaflow.descriptors import Descriptor, Structure, check_elements, param
from malaflow.errors import MalaflowError, ParameterError
from .lammps_loader import import_lammps

# LAMMPS instances in one process share MPI state; one at a time is the safe choice
# (parallelism comes from several worker processes).
_LAMMPS_LOCK = threading.Lock()


@dataclass
class BispectrumParams:
    twojmax: int = param(10, "2·J_max of the hyperspherical harmonics; 10 gives 91 features")
    rcutfac: float = param(4.67637, "cutoff scale (Å): atoms of elements i, j interact within rcutfac·(R_i + R_j)")
    rfac0: float = param(0.99363, "maps the cutoff onto the 3-sphere angle θ0 = rfac0·π·(r − rmin0)/(rc − rmin0)")
    rmin0: float = param(0.0, "inner distance (Å) of that mapping")
    radelem: float | dict[str, float] = param(0.5, "element radius R: one value, or {symbol: value}")
    wj: float | dict[str, float] = param(1.0, "neighbour weight per element: one value, or {symbol: value}")
    bzeroflag: int = param(0, "1: subtract the bispectrum of an isolated point")
    quadraticflag: int = param(0, "1: append all products B_i·B_j as features")
    switchflag: int = param(1, "1: smooth cosine switching function to zero at the cutoff")
    elements: list[str] | None = param(None, "element (LAMMPS type) order [elements present, by atomic number]")

    def __post_init__(self) -> None:
        if not 0 <= self.twojmax <= 30:
            raise ParameterError(f"bispectrum: twojmax must be between 0 and 30, got {self.twojmax}")
        if not self.rcutfac > 0:
            raise ParameterError(f"bispectrum: rcutfac must be > 0 Å, got {self.rcutfac}")
        if not 0 < self.rfac0 <= 1:
            raise ParameterError(f"bispectrum: rfac0 must be in (0, 1], got {self.rfac0}")
        for flag in ("bzeroflag", "quadraticflag", "switchflag"):
            if getattr(self, flag) not in (0, 1):
                raise ParameterError(f"bispectrum: {flag} must be 0 or 1, got {getattr(self, flag)}")
        self.elements = check_elements("bispectrum", self.elements)


def bispectrum_indices(twojmax: int) -> list[tuple[int, int, int]]:
    """(j1, j2, j) of each feature B(j1, j2, j), j1 ≥ j2, j ≥ j1, in LAMMPS's order (2j values)."""
    return [
        (j1, j2, j)
        for j1 in range(twojmax + 1)
        for j2 in range(j1 + 1)
        for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2)
        if j >= j1
    ]


def n_bispectrum(twojmax: int) -> int:
    """Number of bispectrum components (LAMMPS's set)."""
    return len(bispectrum_indices(twojmax))


def lammps_cell(cell: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(lx, ly, lz, xy, xz, yz) of the same cell rotated so that a1 ∥ x and a2 in the
    xy plane — the only orientation LAMMPS accepts. Lengths and angles are kept, so
    fractional coordinates (and hence grid points) map one to one."""
    a, b, c = np.asarray(cell, dtype=float)
    if np.linalg.det(cell) <= 0:
        raise ParameterError(
            f"the cell {np.asarray(cell).tolist()} is left-handed; LAMMPS needs a right-handed "
            "cell (swap two cell vectors and the matching fractional coordinates)"
        )
    lx = np.linalg.norm(a)
    xy = b @ a / lx
    ly = np.sqrt(b @ b - xy * xy)
    xz = c @ a / lx
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(c @ c - xz * xz - yz * yz)
    return tuple(float(v) for v in (lx, ly, lz, xy, xz, yz))


class BispectrumDescriptor(Descriptor):
    """SNAP bispectrum (Thompson et al. 2015) at grid points, via LAMMPS compute sna/grid."""

    name = "bispectrum"
    Params = BispectrumParams
    blockwise = False

    def per_element(self, key: str, order: list[int]) -> list[float]:
        """radelem or wj for each element in ``order``."""
        value = getattr(self.params, key)
        if not isinstance(value, Mapping):
            return [float(value)] * len(order)
        missing = [chemical_symbols[z] for z in order if chemical_symbols[z] not in value]
        if missing:
            raise ParameterError(f"bispectrum: {key} has no value for element(s) {missing}")
        return [float(value[chemical_symbols[z]]) for z in order]

    def n_features(self, structure: Structure) -> int:
        n = n_bispectrum(self.params.twojmax)
        return n + n * (n + 1) // 2 if self.params.quadraticflag else n

    def halo(self) -> float:
        """Neighbours of a grid point within rcutfac·2·max(radelem) (sna/grid's cutoff)."""
        value = self.params.radelem
        radii = value.values() if isinstance(value, Mapping) else [value]
        return 2.0 * self.params.rcutfac * max(radii)

    def lammps_commands(self, structure: Structure, grid_shape: tuple[int, int, int]) -> list[str]:
        """The LAMMPS input that sets up the box and the sna/grid compute."""
        p = self.params
        order = structure.element_order(self.params.elements, self.name)
        lx, ly, lz, xy, xz, yz = lammps_cell(structure.cell)
        boundary = " ".join("p" if periodic else "f" for periodic in structure.pbc)
        radii = " ".join(repr(r) for r in self.per_element("radelem", order))
        weights = " ".join(repr(w) for w in self.per_element("wj", order))
        nx, ny, nz = grid_shape
        return [
            "units metal",
            "atom_style atomic",
            f"boundary {boundary}",
            f"region cell prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r} units box",
            f"create_box {len(order)} cell",
            "mass * 1.0",
            f"pair_style zero {self.halo()!r}",
            "pair_coeff * *",
            f"compute bgrid all sna/grid grid {nx} {ny} {nz} {p.rcutfac!r} {p.rfac0!r} {p.twojmax} "
            f"{radii} {weights} rmin0 {p.rmin0!r} bzeroflag {p.bzeroflag} "
            f"quadraticflag {p.quadraticflag} switchflag {p.switchflag}",
            "thermo_style custom step c_bgrid[1][1]",
        ]

    def compute_grid(self, structure: Structure, grid_shape: tuple[int, int, int]) -> np.ndarray:
        lammps = import_lammps()
        order = structure.element_order(self.params.elements, self.name)
        types = [order.index(z) + 1 for z in structure.numbers]
        lx, ly, lz, xy, xz, yz = lammps_cell(structure.cell)
        rotated = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
        f = structure.frac
        x = f[:, 0:1] * rotated[0] + f[:, 1:2] * rotated[1] + f[:, 2:3] * rotated[2]
        nx, ny, nz = grid_shape
        with _LAMMPS_LOCK:
            lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
            try:
                lmp.commands_list(self.lammps_commands(structure, grid_shape)[:6])
                created = lmp.create_atoms(
                    len(types), list(range(1, len(types) + 1)), types, x.reshape(-1).tolist()
                )
                if created != len(types):
                    raise MalaflowError(f"LAMMPS created {created} of {len(types)} atoms")
                lmp.commands_list(self.lammps_commands(structure, grid_shape)[6:] + ["run 0"])
                array = lmp.numpy.extract_compute("bgrid", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_ARRAY)
                # rows run over grid points with x fastest; columns: x, y, z, features
                grid = np.array(array, dtype=float).reshape(nz, ny, nx, -1)[..., 3:]
            finally:
                lmp.close()
        return np.ascontiguousarray(grid.transpose(2, 1, 0, 3))


@hookimpl
def malaflow_descriptors():
    return [BispectrumDescriptor]
