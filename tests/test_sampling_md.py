"""Monte Carlo and the ionic-structure observables, against analytic results; the
malaflow Calculator in a Metropolis run and in ASE molecular dynamics."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

import malaflow
from malaflow.errors import ParameterError
from malaflow.units import KB_EV


class Harmonic(Calculator):
    """E = ½ k Σ |R − R₀|²: equipartition gives ⟨E⟩ = (3N/2) k_BT exactly."""

    implemented_properties = ["energy", "free_energy"]

    def __init__(self, reference: np.ndarray, k: float) -> None:
        super().__init__()
        self.reference, self.k = reference.copy(), k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        e = 0.5 * self.k * float(((self.atoms.positions - self.reference) ** 2).sum())
        self.results = {"energy": e, "free_energy": e}


def test_metropolis_samples_the_canonical_distribution(tmp_path):
    atoms = harmonic_pair()
    t = 600.0
    run = malaflow.metropolis(atoms, t, 40000, step=0.05, seed=1, trajectory=tmp_path / "mc.traj",
                              write_every=1000, progress=False)
    mean = run.energies[5000:].mean() / (3 * KB_EV * t)  # ⟨E⟩ / (3N/2 · k_BT), N = 2
    assert mean == pytest.approx(1.0, abs=0.05)  # achieved 0.6 % (seeded chain)
    assert 0.2 < run.acceptance < 0.95
    from ase.io import read

    frames = read(tmp_path / "mc.traj", index=":")
    assert len(frames) == 40 and frames[-1].get_potential_energy() == pytest.approx(run.energies[-1])
    assert np.array_equal(malaflow.metropolis(harmonic_pair(), t, 200, step=0.05, seed=1, progress=False).energies,
                          malaflow.metropolis(harmonic_pair(), t, 200, step=0.05, seed=1, progress=False).energies)
    with pytest.raises(ParameterError, match="temperature > 0"):
        malaflow.metropolis(atoms, -1.0, 10)


def harmonic_pair() -> Atoms:
    """Two atoms tied to their starting places by springs."""
    atoms = Atoms("Be2", positions=[[0, 0, 0], [1.5, 0, 0]], cell=[6, 6, 6], pbc=True)
    atoms.calc = Harmonic(atoms.positions, k=5.0)
    return atoms


def test_rdf_of_a_crystal_and_of_an_ideal_gas():
    """fcc: the first shell holds 12 neighbours at a/√2; random positions: g = 1."""
    from malaflow.ionic import radial_distribution

    a = bulk("Al", "fcc", a=4.05, cubic=True).repeat(3)
    r, g = radial_distribution(a, 3.5, 70)
    edges = np.linspace(0, 3.5, 71)
    rho = len(a) / a.get_volume()
    assert (rho * g * 4 * np.pi / 3 * (edges[1:] ** 3 - edges[:-1] ** 3)).sum() == pytest.approx(12.0, rel=1e-12)
    assert abs(r[g.argmax()] - 4.05 / np.sqrt(2)) < 0.025  # within the bin of width 0.05
    rng = np.random.default_rng(0)
    gas = [Atoms("Al500", positions=rng.random((500, 3)) * 20, cell=[20] * 3, pbc=True) for _ in range(4)]
    r, g = radial_distribution(gas, 6.0, 30)
    assert g[10:].mean() == pytest.approx(1.0, abs=0.02)  # achieved 0.5 %
