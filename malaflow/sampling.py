"""Atomic configurations for training data: read from a file, or sampled from a crystal
with Einstein displacements or a short Langevin molecular-dynamics run.

Why MD: independent Gaussian displacements (the Einstein model) give every atom the
right mean-square displacement but no correlation between neighbours, and no liquid.
A Langevin run with a cheap classical potential (ASE's EMT: Al, Cu, Ag, Au, Ni, Pd, Pt)
samples correlated thermal motion, and, after melting and quenching, a liquid at the
target temperature. The potential only chooses the configurations; DFT labels them, so
its errors shift *which* configurations are seen, not the training targets.

Limits: EMT's lattice constant and melting point differ from DFT's (the cell is not
relaxed: its size is the one given, e.g. the experimental density); frames ``stride``
steps apart are correlated when ``stride × timestep`` is short against the phonon
period (~0.1–0.3 ps); a liquid in a small periodic box may recrystallise on long runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ParameterError

MD_DEFAULTS = {
    "potential": "emt", "temperature": None, "timestep_fs": 2.0, "friction": 0.02,
    "equilibration": 1000, "stride": 100, "phase": "solid", "melt_temperature": None, "melt_steps": 2000,
}


def configurations(spec: dict[str, Any]) -> list:
    """ase.Atoms from a structure file/trajectory (``file``, ``index``) or sampled from a
    crystal (``bulk``: ase.build.bulk arguments, ``supercell``, ``count``, ``seed``) with
    either ``displacement`` (``sigma`` in Å, or ``temperature`` K with ``einstein_thz``,
    the Einstein-model width σ² = k_B T / (M ω²) per Cartesian direction) or ``md``
    (Langevin molecular dynamics, see :func:`md_frames`)."""
    from ase.build import bulk

    if "file" in spec:
        import ase.io

        frames = ase.io.read(spec["file"], index=spec.get("index", ":"))
        return frames if isinstance(frames, list) else [frames]
    if "bulk" not in spec:
        raise ParameterError("structures: give either file: or bulk:")
    if "md" in spec and "displacement" in spec:
        raise ParameterError("structures: give either displacement: or md:, not both")
    crystal = bulk(**spec["bulk"]).repeat(tuple(spec.get("supercell", [1, 1, 1])))
    count, seed = int(spec.get("count", 1)), int(spec.get("seed", 0))
    if "md" in spec:
        return md_frames(crystal, count, seed, spec["md"])
    return einstein_frames(crystal, count, seed, spec.get("displacement", {}))


def einstein_frames(crystal, count: int, seed: int, shift: dict[str, Any]) -> list:
    """``count`` copies of ``crystal`` with independent Gaussian displacements."""
    from ase import units

    rng = np.random.default_rng(seed)
    if "sigma" in shift:
        sigma = np.full(len(crystal), float(shift["sigma"]))
    elif "temperature" in shift:
        omega = 2 * math.pi * float(shift.get("einstein_thz", 10.0)) * 1e12  # 1/s
        mass = crystal.get_masses() * units._amu  # kg
        sigma = np.sqrt(units._k * float(shift["temperature"]) / (mass * omega**2)) * 1e10  # Å
    else:
        sigma = np.zeros(len(crystal))
    out = []
    for _ in range(count):
        atoms = crystal.copy()
        atoms.positions += rng.normal(size=(len(atoms), 3)) * sigma[:, None]
        out.append(atoms)
    return out


def md_settings(md: dict[str, Any]) -> dict[str, Any]:
    """The ``md:`` mapping with defaults, checked (unknown keys, ranges)."""
    unknown = sorted(set(md) - set(MD_DEFAULTS))
    if unknown:
        raise ParameterError(f"structures.md: unknown key(s) {unknown}; known: {sorted(MD_DEFAULTS)}")
    s = {**MD_DEFAULTS, **md}
    if s["temperature"] is None:
        raise ParameterError("structures.md: give the temperature (K) of the run")
    if s["potential"] != "emt":
        raise ParameterError(f"structures.md: potential {s['potential']!r} is not known (known: emt)")
    if s["phase"] not in ("solid", "liquid"):
        raise ParameterError(f"structures.md: phase must be solid or liquid, not {s['phase']!r}")
    for key in ("temperature", "timestep_fs", "friction"):
        if not float(s[key]) > 0:
            raise ParameterError(f"structures.md: {key} must be > 0, not {s[key]}")
    for key in ("equilibration", "stride", "melt_steps"):
        if int(s[key]) != s[key] or s[key] < (1 if key == "stride" else 0):
            raise ParameterError(f"structures.md: {key} must be a whole number of steps ≥ {1 if key == 'stride' else 0}")
    if s["phase"] == "liquid" and s["melt_temperature"] is None:
        s["melt_temperature"] = 3 * float(s["temperature"])
    return s


def md_frames(crystal, count: int, seed: int, md: dict[str, Any]) -> list:
    """``count`` frames of a Langevin run with ASE's EMT at ``md.temperature``.

    Velocities start from a Maxwell–Boltzmann distribution at that temperature; for
    ``phase: liquid`` the crystal is first melted (``melt_steps`` at ``melt_temperature``,
    default 3× the target) and quenched by the thermostat; then ``equilibration`` steps,
    then one frame every ``stride`` steps. The same seed gives the same frames.
    """
    from ase import units
    from ase.calculators.emt import EMT, parameters
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE ≥ 3.29
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    s = md_settings(md)
    missing = set(crystal.get_chemical_symbols()) - set(parameters)
    if missing:
        raise ParameterError(f"structures.md: EMT has no parameters for {sorted(missing)}; use displacement: instead")
    atoms = crystal.copy()
    atoms.set_constraint(FixCom())  # the thermostat's kicks would otherwise let the cell drift
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    temperature = float(s["temperature"])
    dt = float(s["timestep_fs"]) * units.fs

    def run(steps: int, kelvin: float) -> None:
        if steps:
            dyn = Langevin(atoms, dt, temperature_K=kelvin, friction=float(s["friction"]) / units.fs, rng=rng,
                           fixcm=False)
            dyn.run(int(steps))

    if s["phase"] == "liquid":
        thermalize_momenta(atoms, temperature_K=float(s["melt_temperature"]), rng=rng)
        Stationary(atoms)
        run(s["melt_steps"], float(s["melt_temperature"]))
    else:
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
    run(s["equilibration"], temperature)
    frames = []
    for _ in range(count):
        run(s["stride"], temperature)
        frame = crystal.copy()
        frame.positions = atoms.positions
        frame.wrap()
        frames.append(frame)
    return frames


def pair_correlation(frames: list, r_max: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The radial distribution function g(r) averaged over ``frames`` (periodic cells),
    so a user can see whether a sample is a crystal or a liquid."""
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, r_max, bins + 1)
    hist = np.zeros(bins)
    density = 0.0
    for atoms in frames:
        d = neighbor_list("d", atoms, r_max)
        hist += np.histogram(d, edges)[0] / len(atoms)
        density += len(atoms) / atoms.get_volume()
    density /= len(frames)
    shell = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / len(frames) / (shell * density)
