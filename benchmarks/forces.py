"""Forces from the predicted LDOS (issue 20): cost, accuracy beside DFT, energy
conservation.

* **Cost**: energy alone beside energy + forces of a ≥10⁵-point cell (Be2 snapshot 3 ×
  3×3×2: 36 atoms, 54³ points), the model of examples/train-be2.yaml (bispectrum
  twojmax 10, 91 → 200 → 11), each in its own process (time, peak RSS).
* **Accuracy**: forces of the same model (and of a smooth one) against pw.x's
  (``tprnfor``) on the snapshots it was not trained on, per snapshot: RMSE (eV/Å) and
  the relative error of the force norms. When ``generated/catalog.yaml`` holds their
  data, the models of examples/train-be8-298K.yaml (8-atom cells) and
  examples/train-be-md.yaml (16-atom cells), trained or resumed in the folders they name,
  are measured on the test cells of their own size too (with pw.x's forces:
  examples/generate-be8.yaml, generate-be16.yaml).
* **Energy conservation**: velocity Verlet (NVE) of a 16-atom Be cell (snapshot 3 ×
  2×2×2, relaxed on the model's own surface first) from 298 K velocities with a smooth model
  (sigmoid activation, twojmax 6 to keep ≥ 200 steps within an hour here): that of
  examples/train-be-md.yaml when its data (16-atom cells, 298 K and 1200 K-displaced)
  are there, else the demo's. F + kinetic energy per
  step, its drift (slope of a straight-line fit) in meV/atom/ps, with the share of
  extrapolated grid points per step, and a plot. Then, once examples/generate-be16-nve.yaml
  has had pw.x label every 50th frame of the run, the model's F and forces beside DFT's
  along the trajectory, and a second run with the model retrained on those frames too
  (examples/train-be-md-nve.yaml; nve-be16-round2.jsonl/png).

The demo models are trained here (not timed) on the demo data: snapshots 0, 1 train,
2 validates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .harness import measure, table

ROOT = Path(__file__).resolve().parent.parent
COST_CELL = [3, 3, 2]
NVE_CELL = [2, 2, 2]
NVE_STEPS = 200
NVE_TIMESTEP_FS = 1.0
#: the NVE run starts from the tiled snapshot relaxed on the model's own surface (BFGS, at most this many steps)
NVE_RELAX_STEPS = 60
NVE_RELAX_FMAX = 0.02  # eV/Å
#: share of extrapolated grid points beyond which an NVE step counts as outside the model's trusted region
TRUSTED_EXTRAPOLATION = 0.01
GENERATED = ROOT / "generated" / "catalog.yaml"
#: the NVE model when its data are there: examples/train-be-md.yaml on 16-atom cells displaced as at 150–1200 K
EXAMPLES_MD = ROOT / "examples" / "train-be-md.yaml"
MD_DATASETS = ("be16-298K", "be16-150K-displaced", "be16-600K-displaced", "be16-1200K-displaced")
MD_MODEL = "be md (sigmoid, twojmax 10, 16-atom cells, 150–1200 K)"
#: the NVE run's log (plot beside it, .png) of the first model; the second round's
NVE_LOG = Path(__file__).resolve().parent / "nve-be16.jsonl"
NVE_LOG_ROUND2 = Path(__file__).resolve().parent / "nve-be16-round2.jsonl"
NVE_CHECK_DATASET = "be16-nve"
#: the second round: the md model retrained with those labelled frames
EXAMPLES_MD_NVE = ROOT / "examples" / "train-be-md-nve.yaml"


def _catalog(folder: Path):
    import malaflow as mf
    from malaflow.catalog import Catalog

    demo = Path(mf.__file__).parent / "demo_data" / "Be2"
    cat = Catalog(folder / "catalog.yaml")
    for i, split in enumerate(["train", "train", "validation", "test"]):
        cat.add(demo / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split, chunks=9)
    return cat


def models(folder: Path) -> dict[str, Path]:
    """The examples/train-be2.yaml model and a smooth twojmax-6 model, trained here."""
    import malaflow as mf
    from malaflow.config import read_yaml

    cat = _catalog(folder)
    config = read_yaml(ROOT / "examples" / "train-be2.yaml", "training config")
    relu = {**config, "output": str(folder / "relu"), "catalog": str(cat.path)}
    out = {"train-be2 (relu, twojmax 10)": mf.train(relu, progress=False)}
    smooth = {**config, "output": str(folder / "smooth"), "catalog": str(cat.path),
              "descriptor": {"plugin": "bispectrum", "params": {"twojmax": 6}},
              "model": {"plugin": "feedforward", "params": {"layers": [200], "activation": "sigmoid"}}}
    mf.compute_descriptors([cat.store_path(r.id) for r in cat.records], "bispectrum", params={"twojmax": 6},
                           chunks=9, progress=False)
    out["smooth (sigmoid, twojmax 6)"] = mf.train(smooth, progress=False)
    return out


def _snapshot_atoms(i: int, reps=(1, 1, 1)):
    import malaflow as mf

    snap = mf.read_snapshot(Path(mf.__file__).parent / "demo_data" / "Be2" / f"Be_snapshot{i}.info.json")
    return snap, snap.atoms.repeat(tuple(reps))


def cost(model: str, reps: list[int], with_forces: bool) -> dict:
    import malaflow as mf

    _, atoms = _snapshot_atoms(3, reps)
    atoms.calc = mf.Calculator(model, chunks=27)
    t0 = time.perf_counter()
    energy = atoms.get_potential_energy()
    if with_forces:
        atoms.get_forces()
    return {"seconds": time.perf_counter() - t0, "energy": energy,
            "points": int(np.prod(atoms.calc.state.predicted.attrs["grid_shape"]))}


def demo_snapshots() -> list[str]:
    """The held-out MALA Be2 snapshots (validation and test of the demo split)."""
    import malaflow as mf

    return [str(Path(mf.__file__).parent / "demo_data" / "Be2" / f"Be_snapshot{i}.info.json") for i in (2, 3)]


def _beside_dft(snap, calc) -> dict:
    """A snapshot's forces (and free energy) from ``calc`` beside pw.x's forces: RMSE, the
    mean relative error of the per-atom norms, the largest components, the net force."""
    atoms = snap.atoms
    atoms.calc = calc
    ours, dft = atoms.get_forces(), np.asarray(snap.attrs["dft_forces"])
    norm_ours, norm_dft = np.linalg.norm(ours, axis=1), np.linalg.norm(dft, axis=1)
    return {"rmse": float(np.sqrt(((ours - dft) ** 2).mean())),
            "norm_error": float(np.mean(abs(norm_ours - norm_dft) / norm_dft)),
            "dft_max": float(abs(dft).max()), "ours_max": float(abs(ours).max()),
            "net": float(np.linalg.norm(calc.results["net_force"])), "atoms": len(atoms),
            "ours": float(atoms.get_potential_energy(force_consistent=True))}


def accuracy(model: str, sources: list[str]) -> dict:
    """Forces of held-out snapshots (info files or stores) beside pw.x's: RMSE and norm errors."""
    import malaflow as mf

    calc = mf.Calculator(model)
    out = {"seconds": 0.0}
    for source in sources:
        snap = mf.read_snapshot(source) if source.endswith(".json") \
            else mf.Snapshot.from_dataset(mf.open_snapshot(source))
        out[Path(source).name.split(".")[0]] = _beside_dft(snap, calc)
    return out


def _datasets() -> set[str]:
    """The datasets of the generated catalog."""
    from malaflow.catalog import Catalog

    return {r.dataset for r in Catalog.load(GENERATED).records} if GENERATED.is_file() else set()


def generated_models() -> dict[str, tuple[Path, list[str]]]:
    """The models of the examples on generated Be cells whose data the catalog holds, each
    trained (or resumed) in the folder its example names, as ``malaflow train`` does, with
    the held-out cells of its own cell size that carry pw.x's forces."""
    import malaflow as mf
    from malaflow.catalog import Catalog

    present = _datasets()
    if not present:
        return {}
    cat = Catalog.load(GENERATED)

    def tests(dataset: str) -> list[str]:
        paths = [str(cat.store_path(r.id)) for r in cat.records if r.dataset == dataset and r.split == "test"]
        return [p for p in paths if "dft_forces" in mf.open_snapshot(p).attrs]

    found = {}
    be8 = tests("be8-298K") if "be8-298K" in present else []
    if be8:
        found["be8 (relu, twojmax 10)"] = (mf.train(ROOT / "examples" / "train-be8-298K.yaml", progress=False), be8)
    md = tests(MD_DATASETS[0]) if set(MD_DATASETS) <= present else []  # the cells a model for dynamics needs
    if md:
        found[MD_MODEL] = (mf.train(EXAMPLES_MD, progress=False), md)
    return found


def nve(model: str, steps: int, timestep_fs: float, log: str, trajectory: str) -> dict:
    """Velocity Verlet from 298 K Maxwell–Boltzmann velocities (seeded); one JSON line
    per step into ``log``: time (fs), free energy, kinetic energy (eV), the share of
    grid points where the model extrapolates, the shortest interatomic distance (Å),
    and whether the prediction carried a warning (atoms closer than the training data);
    the atoms of every step into the ASE ``trajectory``."""
    import malaflow as mf
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.io.trajectory import Trajectory
    from ase.md.verlet import VelocityVerlet
    from malaflow.trust import shortest_distance

    from ase.optimize import BFGS

    _, atoms = _snapshot_atoms(3, NVE_CELL)
    atoms.calc = mf.Calculator(model, chunks=27)
    relax = BFGS(atoms, logfile=None)  # start at the model's own minimum, not at a DFT snapshot's geometry
    relax.run(fmax=NVE_RELAX_FMAX, steps=NVE_RELAX_STEPS)
    relaxed = {"relax_steps": relax.nsteps, "relax_fmax": float(np.linalg.norm(atoms.get_forces(), axis=1).max())}
    thermalize_momenta(atoms, temperature_K=298, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        def record() -> None:
            free = atoms.get_potential_energy(force_consistent=True)
            r = atoms.calc.results
            f.write(json.dumps([dyn.nsteps * timestep_fs, free, atoms.get_kinetic_energy(), r["extrapolated"],
                                shortest_distance(atoms.positions, atoms.cell), bool(r["warnings"])]) + "\n")
            f.flush()

        dyn.attach(record)
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        with Trajectory(trajectory, "w", atoms) as frames:
            dyn.attach(frames.write)
            dyn.run(steps)
    return {"seconds": time.perf_counter() - t0, "atoms": len(atoms), **relaxed}


def along_trajectory(model: str) -> dict:
    """The model's free energy and forces beside pw.x's at the NVE frames that
    examples/generate-be16-nve.yaml labelled (dataset ``NVE_CHECK_DATASET``): whether the
    surface the run moved on is DFT's. Per step: F of both (eV), force RMSE (eV/Å), the
    shortest distance (Å)."""
    import ase.io
    import malaflow as mf
    from malaflow.catalog import Catalog
    from malaflow.trust import shortest_distance

    frames = ase.io.read(trajectory_of(NVE_LOG), ":")
    cat = Catalog.load(GENERATED)
    calc = mf.Calculator(model, chunks=27)
    out = {"seconds": 0.0}
    for record in (r for r in cat.records if r.dataset == NVE_CHECK_DATASET):
        stored = mf.open_snapshot(str(cat.store_path(record.id)))
        snap = mf.Snapshot.from_dataset(stored)
        labelled, cell = snap.atoms.positions, snap.atoms.cell.array
        fractional = [(frame.positions - labelled) @ np.linalg.inv(cell) for frame in frames]
        # largest displacement (Å) between each frame and the labelled atoms, across cell images
        gaps = [float(np.abs((d - np.round(d)) @ cell).max()) for d in fractional]
        step = int(np.argmin(gaps))
        if gaps[step] > 1e-4:  # a frame of an earlier run
            continue
        out[str(step)] = {**_beside_dft(snap, calc), "dft": float(stored.attrs["reference"]["total_energy"]),
                          "shortest": float(shortest_distance(labelled, cell))}
    return out


def along_table(model: str) -> str | None:
    """The table of :func:`along_trajectory`; None when pw.x labelled no frame of this run."""
    run = measure("benchmarks.forces", "along_trajectory", model).extra
    steps = sorted(run, key=int)
    if not steps:
        return None
    first = run[steps[0]]
    rows = []
    for step in steps:
        r = run[step]
        rows.append([step, f"{r['shortest']:.2f}", f"{(r['dft'] - first['dft']) / r['atoms'] * 1e3:+.1f}",
                     f"{(r['ours'] - first['ours']) / r['atoms'] * 1e3:+.1f}",
                     f"{(r['ours'] - r['dft']) / r['atoms'] * 1e3:+.1f}", f"{r['rmse']:.3f}"])
    return table(rows, ["NVE step", "shortest distance (Å)", "F − F(first), pw.x (meV/atom)",
                        "F − F(first), ours", "F ours − pw.x (meV/atom)", "force RMSE (eV/Å)"])


def drift(log: str | Path, n_atoms: int) -> dict:
    """Slope (meV/atom/ps) of a straight line through F + kinetic energy and its largest
    excursion (meV/atom): over the whole run and over the steps before the model first
    extrapolates (a prediction warning, or over TRUSTED_EXTRAPOLATION of the grid points
    outside the training descriptors: its trusted region)."""
    rows = np.array([json.loads(line) for line in open(log)], dtype=float)
    total = (rows[:, 1] + rows[:, 2]) / n_atoms * 1e3
    warned = np.flatnonzero((rows[:, 5] > 0) | (rows[:, 3] > TRUSTED_EXTRAPOLATION))
    trusted = int(warned[0]) if len(warned) else len(rows)
    out = {"rows": rows, "trusted_steps": trusted}
    for name, part in (("all", slice(None)), ("trusted", slice(0, max(trusted, 2)))):
        out[name] = (float(np.polyfit(rows[part, 0] / 1e3, total[part], 1)[0]), float(np.ptp(total[part])))
    return out


def plot(rows: np.ndarray, n_atoms: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = rows[:, 0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    series = ((rows[:, 1], "free energy F"), (rows[:, 2], "kinetic"), (rows[:, 1] + rows[:, 2], "F + kinetic"))
    for values, label in series:
        top.plot(t, (values - values[0]) / n_atoms * 1e3, label=label)
    top.set_ylabel("change per atom (meV)")
    top.set_title(f"NVE, {n_atoms}-atom Be cell, malaflow forces, Δt = {t[1] - t[0]:g} fs")
    top.legend()
    bottom.plot(t, 100 * rows[:, 3], color="tab:red", label="grid points extrapolated (%)")
    bottom.set_ylabel("extrapolated (%)", color="tab:red")
    twin = bottom.twinx()
    twin.plot(t, rows[:, 4], color="tab:gray", label="shortest distance")
    twin.set_ylabel("shortest distance (Å)", color="tab:gray")
    bottom.set_xlabel("time (fs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cost_table(model: str) -> str:
    energy = measure("benchmarks.forces", "cost", model, COST_CELL, False)
    both = measure("benchmarks.forces", "cost", model, COST_CELL, True)
    row = [f"Be2 × {'×'.join(map(str, COST_CELL))} ({2 * int(np.prod(COST_CELL))} atoms)",
           f"{energy.extra.get('points', 0):,}", f"{energy.seconds:.0f} s, {energy.peak_mb:.0f} MB",
           f"{both.seconds:.0f} s, {both.peak_mb:.0f} MB", f"{both.seconds / energy.seconds:.2f}"]
    return table([row], ["cell", "grid points", "energy alone", "energy + forces", "ratio"])


def accuracy_table(models: dict[str, tuple[Path, list[str]]]) -> str:
    rows = []
    for name, (path, sources) in models.items():
        for snap, r in measure("benchmarks.forces", "accuracy", str(path), sources).extra.items():
            rows.append([name, f"{snap} ({r['atoms']} atoms)", f"{r['rmse']:.3f}", f"{100 * r['norm_error']:.0f} %",
                         f"{r['dft_max']:.3f}", f"{r['ours_max']:.3f}", f"{r['net']:.1e}"])
    return table(rows, ["model", "held-out snapshot", "force RMSE (eV/Å)", "norm error", "max |F| DFT",
                        "max |F| ours", "net force (eV/Å)"])


def trajectory_of(log: Path) -> Path:
    """Where the NVE run of ``log`` keeps its atoms at every step (outside git; the first
    run's is what examples/generate-be16-nve.yaml hands to pw.x)."""
    return GENERATED.parent / f"{log.stem}.traj"


def nve_line(name: str, model: str, log: Path = NVE_LOG) -> str:
    """An NVE run in its own process, its log, trajectory and plot."""
    picture = log.with_suffix(".png")
    run = measure("benchmarks.forces", "nve", model, NVE_STEPS, NVE_TIMESTEP_FS, str(log), str(trajectory_of(log)))
    if run.seconds is None:
        return f"NVE with {name}: failed ({run.note})"
    d = drift(log, run.extra["atoms"])
    plot(d["rows"], run.extra["atoms"], picture)
    return (f"NVE with {name}: {run.extra['atoms']} atoms, relaxed on the model's surface first "
            f"({run.extra['relax_steps']} BFGS steps, largest force then {run.extra['relax_fmax']:.3f} eV/Å), "
            f"{NVE_STEPS} steps of {NVE_TIMESTEP_FS} fs in "
            f"{run.seconds:.0f} s ({run.peak_mb:.0f} MB): drift {d['all'][0]:+.3f} meV/atom/ps, largest excursion "
            f"of F + kinetic {d['all'][1]:.3f} meV/atom; over the {d['trusted_steps']} steps before the model "
            f"extrapolates: {d['trusted'][0]:+.3f} meV/atom/ps, {d['trusted'][1]:.3f} meV/atom; "
            f"plot {picture.name}, log {log.name}")


def main() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        demo = models(Path(tmp))
        generated = generated_models()
        held_out = {n: (p, demo_snapshots()) for n, p in demo.items()} | generated
        name = MD_MODEL if MD_MODEL in generated else "smooth (sigmoid, twojmax 6)"
        smooth = generated[name][0] if name in generated else demo[name]
        parts = [cost_table(str(demo["train-be2 (relu, twojmax 10)"])), accuracy_table(held_out),
                 nve_line(name, str(smooth))]
        if MD_MODEL in generated and NVE_CHECK_DATASET in _datasets():
            import malaflow as mf

            along = along_table(str(smooth))
            if along is None:  # the labelled frames are of an earlier run
                parts.append("(no frame of this NVE run labelled by pw.x: run examples/generate-be16-nve.yaml)")
            else:  # a second round learns where this run went
                second = mf.train(EXAMPLES_MD_NVE, progress=False)
                parts += [along, nve_line("the md model retrained with the run's labelled frames", str(second),
                                          NVE_LOG_ROUND2)]
        return "\n\n".join(parts)
