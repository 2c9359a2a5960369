"""``bispectrum_lammps``: the SNAP bispectrum on the grid, computed by LAMMPS — the
reference the other implementations of the feature set (:mod:`.snap`) are tested against.

LAMMPS's ``compute sna/grid`` does the whole grid of one snapshot in one call, so this
plugin is not blockwise: one snapshot is one task (several snapshots run as parallel
tasks on a cluster).
"""

from __future__ import annotations

import threading

import numpy as np

from malaflow import hookimpl
from malaflow.descriptors import Structure
from malaflow.errors import MalaflowError, ParameterError
from .lammps_loader import import_lammps
from .snap import SnapBispectrum

# LAMMPS instances in one process share MPI state; one at a time is the safe choice
# (parallelism comes from several worker processes).
_LAMMPS_LOCK = threading.Lock()


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


class BispectrumLammpsDescriptor(SnapBispectrum):
    """SNAP bispectrum (Thompson et al. 2015) at grid points, via LAMMPS compute sna/grid (the reference)."""

    name = "bispectrum_lammps"
    blockwise = False

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
    return [BispectrumLammpsDescriptor]
