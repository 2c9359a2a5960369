"""Training data from Quantum ESPRESSO: configurations → pw.x → pp.x LDOS and density →
Zarr store + catalog record, one Dask task per configuration.

``malaflow generate CONFIG.yaml`` / ``malaflow.generate(config, client=None)``. Each
configuration runs in its own scratch folder; on success its pw.x output and cube files
are kept as the snapshot's raw files (``raw/<id>/``, hashed in the catalog) and the
scratch (wavefunctions, charge density files) is removed; on failure the scratch stays
and the configuration is recorded under ``failed:`` in the catalog with the reason. A configuration is
identified by the hash of its QE inputs and pseudopotentials, so a second run skips
what is done and retries what failed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .config import config_source, load_config, resolve
from .errors import MalaflowError, ParameterError
from .physics.pseudopotential import read_upf
from .readers import sha256
from .sampling import configurations
from .units import KB_EV, RYDBERG_EV

log = logging.getLogger(__name__)


class GenerationError(MalaflowError):
    """A DFT run failed (did not converge, crashed, missing input)."""


@dataclass
class QESettings:
    pseudo_dir: str
    pseudopotentials: dict[str, str]
    ecutwfc: float = 40.0
    ecutrho: float = 160.0
    kpoints: list[int] = field(default_factory=lambda: [8, 8, 8])
    nbnd: int | None = None
    conv_thr: float = 1e-8
    mixing_beta: float = 0.3
    electron_maxstep: int = 100
    mpi_ranks: int = 1
    threads: int = 1
    forces: bool = False  # tprnfor: pw.x prints the forces on the atoms


LDOS_KERNELS = ("smearing", "gaussian")


@dataclass
class LDOSSettings:
    emin: float = -5.0
    emax: float = 20.0
    step: float = 2.5
    broadening: float = 5.0  # pp.x degauss_ldos (eV)
    # the broadening function: "smearing" is pp.x's default, the pw.x smearing (here −∂f/∂ε
    # of a Fermi function of that width, fat tails: keep it narrow); "gaussian" (MALA's
    # choice) needs QE ≥ 7.0 for use_gauss_ldos
    kernel: str = "smearing"

    def __post_init__(self) -> None:
        if self.kernel not in LDOS_KERNELS:
            raise ParameterError(f"generation config: ldos: kernel must be one of {LDOS_KERNELS}, got {self.kernel!r}")


@dataclass
class GenerationConfig:
    output: str
    catalog: str
    qe: QESettings
    structures: dict[str, Any]
    temperature: float = 298.0  # electronic temperature (K): Fermi–Dirac smearing
    ldos: LDOSSettings = field(default_factory=LDOSSettings)
    dataset: str = "generated"
    split: str | dict[str, int] | None = None  # one split, or {split: count} in configuration order
    parallel: int | None = None  # DFT runs at once without a Dask client (default: one per core)

    def __post_init__(self) -> None:
        for name, kind in (("qe", QESettings), ("ldos", LDOSSettings)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                try:
                    setattr(self, name, kind(**value))
                except TypeError as exc:
                    raise ParameterError(f"generation config: {name}: {exc}") from None

    @classmethod
    def load(cls, source: Any) -> GenerationConfig:
        """From a config object, a dict, or a YAML file (paths in it relative to the file:
        output, catalog, qe.pseudo_dir and structures.file)."""
        if isinstance(source, GenerationConfig):
            return source
        data, base = config_source(source, "generation config")
        if isinstance(data.get("qe"), Mapping):
            data["qe"] = {**data["qe"], "pseudo_dir": resolve(base, data["qe"].get("pseudo_dir"))}
        if isinstance(data.get("structures"), Mapping) and "file" in data["structures"]:
            data["structures"] = {**data["structures"], "file": resolve(base, data["structures"]["file"])}
        return load_config(cls, data, "generation config", paths=("output", "catalog"), base=base)


# --------------------------------------------------------------------------- QE inputs


def pw_input(atoms, qe: QESettings, temperature: float) -> str:
    from ase.data import atomic_masses, atomic_numbers

    symbols = sorted(set(atoms.get_chemical_symbols()))
    missing = [s for s in symbols if s not in qe.pseudopotentials]
    if missing:
        raise GenerationError(f"no pseudopotential given for {missing}")
    for s in symbols:
        if not (Path(qe.pseudo_dir) / qe.pseudopotentials[s]).is_file():
            raise GenerationError(f"pseudopotential {qe.pseudopotentials[s]} not found in {qe.pseudo_dir}")

    electrons = sum(read_upf(Path(qe.pseudo_dir) / qe.pseudopotentials[s]).z_valence for s in atoms.get_chemical_symbols())
    # metals at finite temperature: 20 % more bands than occupied, at least 4 more
    nbnd = qe.nbnd or max(int(math.ceil(electrons / 2 * 1.2)), int(math.ceil(electrons / 2)) + 4)
    degauss = KB_EV * temperature / RYDBERG_EV
    lines = [
        "&CONTROL", "  calculation = 'scf'", "  outdir = 'temp'", "  prefix = 'snap'",
        f"  pseudo_dir = '{qe.pseudo_dir}'",
        "  verbosity = 'high'",  # k-points and eigenvalues printed even when there are over 100
        *(["  tprnfor = .true."] if qe.forces else []),
        "/",
        "&SYSTEM", "  ibrav = 0", f"  nat = {len(atoms)}", f"  ntyp = {len(symbols)}",
        f"  ecutwfc = {qe.ecutwfc}", f"  ecutrho = {qe.ecutrho}", f"  nbnd = {nbnd}",
        "  occupations = 'smearing'", "  smearing = 'fermi-dirac'", f"  degauss = {degauss:.10f}",
        "  nosym = .true.", "  noinv = .true.", "/",
        "&ELECTRONS", f"  conv_thr = {qe.conv_thr}", f"  mixing_beta = {qe.mixing_beta}",
        f"  electron_maxstep = {qe.electron_maxstep}", "/",
        "ATOMIC_SPECIES",
        *[f"{s} {atomic_masses[atomic_numbers[s]]:.6f} {qe.pseudopotentials[s]}" for s in symbols],
        "K_POINTS automatic", " ".join(str(k) for k in qe.kpoints) + " 0 0 0",
        "CELL_PARAMETERS angstrom", *[" ".join(f"{v:.12f}" for v in row) for row in atoms.cell.array],
        "ATOMIC_POSITIONS angstrom",
        *[f"{s} " + " ".join(f"{v:.12f}" for v in p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
    ]
    return "\n".join(lines) + "\n"


def pp_inputs(ldos: LDOSSettings) -> dict[str, str]:
    return {
        "ldos.in": ("&INPUTPP\n  outdir = 'temp'\n  prefix = 'snap'\n  plot_num = 3\n"
                    f"  emin = {ldos.emin}\n  emax = {ldos.emax}\n  delta_e = {ldos.step}\n"
                    f"  degauss_ldos = {ldos.broadening}\n"
                    + ("  use_gauss_ldos = .true.\n" if ldos.kernel == "gaussian" else "")
                    + "/\n&PLOT\n  iflag = 3\n  output_format = 6\n"
                    "  fileout = 'ldos.cube'\n/\n"),
        "density.in": ("&INPUTPP\n  outdir = 'temp'\n  prefix = 'snap'\n  filplot = 'rho.dat'\n  plot_num = 0\n/\n"
                       "&PLOT\n  iflag = 3\n  output_format = 6\n  fileout = 'density.cube'\n/\n"),
    }


def input_hash(pw: str, pp: dict[str, str], qe: QESettings) -> str:
    h = hashlib.sha256(pw.replace(qe.pseudo_dir, "").encode())
    for name in sorted(pp):
        h.update(pp[name].encode())
    for element in sorted(qe.pseudopotentials):
        h.update(sha256(Path(qe.pseudo_dir) / qe.pseudopotentials[element]).encode())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- running


def completed(raw: Path) -> bool:
    """Whether ``raw`` holds a whole run: pw.x and both pp.x outputs ending in JOB DONE."""
    outs = [raw / name for name in ("scf.out", "ldos.out", "density.out")]
    return all(f.is_file() and "JOB DONE" in f.read_text(errors="replace")[-4000:] for f in outs)


def _keep(workdir: Path, raw: Path) -> None:
    """Move a finished run's inputs, outputs and cubes to ``raw``; drop the rest (wavefunctions)."""
    raw.mkdir(parents=True, exist_ok=True)
    for f in workdir.glob("*"):
        if f.suffix in (".in", ".out", ".cube"):
            shutil.move(str(f), raw / f.name)
    shutil.rmtree(workdir)


def _record(cat: Catalog, raw: Path, id: str, dataset: str, split: str | None) -> None:
    cat.add(raw / "scf.out", reader="qe", id=id, dataset=dataset, split=split,
            ldos=str(raw), density=str(raw / "density.cube"))


def run_qe(workdir: str, pw: str, pp: dict[str, str], qe: QESettings) -> str:
    """pw.x then pp.x (LDOS, density) in ``workdir``; raises GenerationError with the reason."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "scf.in").write_text(pw)
    for name, text in pp.items():
        (work / name).write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": str(qe.threads)}
    mpi = ["mpirun", "-np", str(qe.mpi_ranks)] if qe.mpi_ranks > 1 else []
    for exe, inp, out in [("pw.x", "scf.in", "scf.out"), ("pp.x", "ldos.in", "ldos.out"), ("pp.x", "density.in", "density.out")]:
        if shutil.which(exe) is None:
            raise GenerationError(f"{exe} not found: install Quantum ESPRESSO (Debian: apt-get install quantum-espresso)")
        with open(work / out, "w") as fh:
            done = subprocess.run(mpi + [exe, "-in", inp], cwd=work, stdout=fh, stderr=subprocess.STDOUT, env=env)
        text = (work / out).read_text(errors="replace")
        if exe == "pw.x" and "convergence NOT achieved" in text:
            raise GenerationError(f"pw.x did not converge (see {work / out})")
        if done.returncode != 0 or "JOB DONE" not in text:
            lines = [line.strip() for line in text.splitlines() if "Error" in line or "error" in line]
            raise GenerationError(f"{exe} failed ({'; '.join(lines[:2]) or f'exit {done.returncode}'}), see {work / out}")
    return str(work)


def generate(config: Any, client: Any = None, progress: bool = True) -> dict[str, list[str]]:
    """Run every configuration not yet in the catalog; returns {"done", "skipped", "failed"} ids."""
    from .runtime import run_tasks

    config = GenerationConfig.load(config)
    for element, name in sorted(config.qe.pseudopotentials.items()):  # before anything is written
        if not (Path(config.qe.pseudo_dir) / name).is_file():
            raise GenerationError(f"the pseudopotential of {element}, {name}, is not in pseudo_dir {config.qe.pseudo_dir}")
    out = Path(config.output)
    catalog_path = Path(config.catalog)
    cat = Catalog.load(catalog_path) if catalog_path.exists() else Catalog(catalog_path)
    failed = cat.failed
    pp = pp_inputs(config.ldos)
    jobs, result = [], {"done": [], "skipped": [], "failed": []}
    frames = configurations(config.structures)
    splits = _splits(config.split, len(frames))
    for atoms, split in zip(frames, splits):
        try:
            pw = pw_input(atoms, config.qe, config.temperature)
        except GenerationError as exc:
            id = f"{config.dataset}-invalid-{len(failed)}"
            failed[id] = {"reason": str(exc)}
            result["failed"].append(id)
            continue
        id = f"{config.dataset}-{input_hash(pw, pp, config.qe)}"
        record = next((r for r in cat.records if r.id == id), None)
        if record is not None:
            if record.split != split:
                log.info("%s: split %s → %s (as the config says)", id, record.split, split)
                record.split = split
            result["skipped"].append(id)
            continue
        if completed(out / "scratch" / id):  # run before, the run stopped before keeping it
            _keep(out / "scratch" / id, out / "raw" / id)
        if completed(out / "raw" / id):  # run and kept before, the run stopped before recording it
            _record(cat, out / "raw" / id, id, config.dataset, split)
            failed.pop(id, None)
            result["done"].append(id)
            continue
        jobs.append((id, pw, split))
    tasks = [(_attempt, (str(out / "scratch" / id), pw, pp, config.qe)) for id, pw, _ in jobs]

    def ingest(index: int, outcome: tuple[str, str | None]) -> None:
        """Record one finished configuration at once, so a run stopped midway keeps it."""
        (id, _, split), (workdir, error) = jobs[index], outcome
        if error:
            failed[id] = {"reason": error, "scratch": workdir}
            result["failed"].append(id)
        else:
            failed.pop(id, None)
            _keep(Path(workdir), out / "raw" / id)
            _record(cat, out / "raw" / id, id, config.dataset, split)
            result["done"].append(id)
        cat.save()

    run_tasks(tasks, client, desc="DFT (pw.x + pp.x)", unit="snapshot", progress=progress, on_result=ingest,
              workers=config.parallel)
    cat.save()
    return result


_TIMING = re.compile(r"^\s*(?:PWSCF|PP|POST-PROC)\s+:(.*)CPU(.*)WALL")
_TIME_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def qe_seconds(folder: str | Path, clock: str = "CPU") -> float:
    """Seconds of the pw.x and pp.x runs whose outputs (``*.out``) are in ``folder``, each by
    its last timing line ("PWSCF : 1m23.45s CPU 1m30.00s WALL"): ``clock`` "CPU" or "WALL"."""
    column = {"CPU": 0, "WALL": 1}[clock]
    total = 0.0
    for out in Path(folder).glob("*.out"):
        times = [m.groups() for line in out.read_text(errors="replace").splitlines() if (m := _TIMING.match(line))]
        if times:
            total += sum(float(v) * _TIME_UNITS[u] for v, u in re.findall(r"([\d.]+)([hms])", times[-1][column]))
    return total


def _splits(split: str | Mapping[str, int] | None, n: int) -> list[str | None]:
    """The split of each of ``n`` configurations: one for all, or counts in order."""
    if not isinstance(split, Mapping):
        return [split] * n
    if sum(split.values()) != n or any(not isinstance(c, int) or c < 0 for c in split.values()):
        raise ParameterError(f"generation config: split counts {dict(split)} must be ≥ 0 and add up to "
                             f"the {n} configurations")
    return [name for name, count in split.items() for _ in range(count)]


def _attempt(workdir: str, pw: str, pp: dict[str, str], qe: QESettings) -> tuple[str, str | None]:
    """One configuration as a task: (scratch folder, None) or (scratch folder, reason)."""
    try:
        run_qe(workdir, pw, pp, qe)
        return workdir, None
    except GenerationError as exc:
        return workdir, str(exc)

