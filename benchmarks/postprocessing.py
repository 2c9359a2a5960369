"""Post-processing benchmark: Fermi level, band energy and density from a given LDOS,
MALA 1.4.0 beside malaflow, on Be2 snapshot 0 (18×18×27×11) and on the same LDOS tiled
to a 6×6×4 supercell (108³ points, 72 atoms), read from the same .npy + .info.json files.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .harness import measure, table
from .training import DATA


def make_supercell(folder: Path, reps=(6, 6, 4)) -> Path:
    """Be_snapshot0 repeated ``reps`` times: LDOS tiled, atoms repeated, counts scaled."""
    from ase import Atoms

    ldos = np.load(DATA / "Be_snapshot0.out.npy")
    info = json.loads((DATA / "Be_snapshot0.info.json").read_text())
    atoms_info = info["atoms"]
    atoms = Atoms(numbers=atoms_info["numbers"], positions=atoms_info["positions"], cell=atoms_info["cell"],
                  pbc=True).repeat(reps)
    np.save(folder / "Be_super.out.npy", np.tile(ldos, reps + (1,)))
    n = int(np.prod(reps))
    info.update(grid_dimensions=[g * r for g, r in zip(info["grid_dimensions"], reps)],
                number_of_electrons_exact=info["number_of_electrons_exact"] * n,
                atoms={**atoms_info, "numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                       "cell": atoms.cell.array.tolist()})
    (folder / "Be_super.info.json").write_text(json.dumps(info))
    return folder / "Be_super"


def mala(stem: str) -> dict:
    import mala as m

    p = m.Parameters()
    p.verbosity = 0
    p.targets.ldos_gridsize = 11
    p.targets.ldos_gridspacing_ev = 2.5
    p.targets.ldos_gridoffset_ev = -5
    t0 = time.perf_counter()
    ldos = m.LDOS.from_numpy_file(p, stem + ".out.npy")
    ldos.read_additional_calculation_data(stem + ".info.json", "json")
    fermi, band, density = ldos.fermi_energy, ldos.band_energy, ldos.density
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "fermi": float(fermi), "band": float(band), "n_sum": float(np.sum(density))}


def malaflow(stem: str) -> dict:
    import malaflow as mf

    t0 = time.perf_counter()
    ds = mf.read_snapshot(stem + ".info.json", reader="mala", energy_grid=(-5.0, 2.5)).to_dataset()
    obs = mf.observables(ds)
    density = mf.get_target("ldos").density(ds, obs.fermi_energy).values
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "fermi": obs.fermi_energy, "band": obs.band_energy, "n_sum": float(density.sum())}


def main() -> str:
    if not DATA.is_dir():
        return f"(skipped: no Be2 data at {DATA})"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"Be2 snapshot 0 (8 748 points)": str(DATA / "Be_snapshot0"),
                 "Be2 × 6×6×4 (1 259 712 points)": str(make_supercell(Path(tmp)))}
        for label, stem in cases.items():
            a = measure("benchmarks.postprocessing", "mala", stem)
            b = measure("benchmarks.postprocessing", "malaflow", stem)
            agree = (f"ΔE_F {1e3 * (b.extra['fermi'] - a.extra['fermi']):+.3f} meV, "
                     f"ΔE_band {1e3 * (b.extra['band'] - a.extra['band']):+.3f} meV") if a.seconds and b.seconds else "-"
            rows.append([label, f"{a.seconds:.2f}" if a.seconds else a.note, f"{b.seconds:.2f}" if b.seconds else b.note,
                         f"{b.seconds / a.seconds:.2f}" if a.seconds and b.seconds else "-",
                         f"{a.peak_mb:.0f} / {b.peak_mb:.0f}", agree])
    return table(rows, ["LDOS", "MALA s", "malaflow s", "malaflow : MALA", "peak MB (MALA / malaflow)",
                        "malaflow − MALA"])
