"""Metropolis Monte Carlo in the canonical ensemble with energies from any ASE
calculator (a malaflow :class:`~malaflow.Calculator`: energies only, no forces).

Each step moves one atom, chosen at random, by a displacement uniform in a cube of
edge 2·``step`` (Å) — a symmetric proposal, so detailed balance needs only the
Metropolis acceptance min(1, exp(−ΔF/k_BT)) of the free energy F (``free_energy``,
the Born–Oppenheimer surface at finite electronic temperature). The run is
reproducible from its seed; every ``write_every``-th configuration (accepted or not:
the Markov chain as it stands) goes to an ASE trajectory file with its energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import ParameterError
from .units import KB_EV


@dataclass
class MonteCarloRun:
    """Energies (eV) of the chain after every step, and the share of accepted moves."""

    energies: np.ndarray
    acceptance: float


def metropolis(atoms, temperature: float, steps: int, step: float = 0.05, seed: int = 0,
               trajectory: str | Path | None = None, write_every: int = 1, progress: bool = True) -> MonteCarloRun:
    """Run ``steps`` single-atom Metropolis moves on ``atoms`` (changed in place; its
    calculator gives the energies) at ``temperature`` K."""
    if not temperature > 0 or steps < 1 or not step > 0 or write_every < 1:
        raise ParameterError(f"Monte Carlo needs temperature > 0 K, steps ≥ 1, step > 0 Å and write_every ≥ 1; "
                             f"got {temperature}, {steps}, {step}, {write_every}")
    if atoms.calc is None:
        raise ParameterError("Monte Carlo needs atoms with a calculator (atoms.calc = malaflow.Calculator(model))")
    from ase.io import Trajectory

    rng = np.random.default_rng(seed)
    kt = KB_EV * temperature
    current = atoms.get_potential_energy(force_consistent=True)
    energies, accepted = np.empty(steps), 0
    writer = Trajectory(str(trajectory), "w", atoms) if trajectory is not None else None
    try:
        for i in tqdm(range(steps), desc="Monte Carlo", unit="step", disable=not progress):
            index = rng.integers(len(atoms))
            move = rng.uniform(-step, step, 3)
            positions = atoms.get_positions()
            positions[index] += move
            trial = atoms.copy()
            trial.calc = atoms.calc
            trial.set_positions(positions)
            energy = trial.get_potential_energy(force_consistent=True)
            if energy <= current or rng.random() < math.exp(-(energy - current) / kt):
                atoms.set_positions(positions)
                current, accepted = energy, accepted + 1
            energies[i] = current
            if writer is not None and (i + 1) % write_every == 0:
                writer.write(atoms, energy=current, free_energy=current)
    finally:
        if writer is not None:
            writer.close()
    return MonteCarloRun(energies, accepted / steps)
