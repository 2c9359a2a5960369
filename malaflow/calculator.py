"""An ASE calculator backed by a trained malaflow model.

``atoms.calc = malaflow.Calculator(model)``; ``atoms.get_potential_energy()`` gives the
energy from the predicted LDOS and ``atoms.get_forces()`` its negative gradient
(:mod:`malaflow.forces`). With the training DFT's pseudopotentials (copied beside the
model) the energy is the total one — ``free_energy`` is F = E − TS, ``energy`` is E —
otherwise the band energy (``results["kind"]`` says which). The forces are those of
the free energy F, as pw.x's are at finite smearing, so that molecular dynamics
conserves F plus the kinetic energy. ``calc.results`` also holds the Fermi level, the
electron count, the share of grid points where the model extrapolates and the net
force (before removal, if asked for); with an ensemble model (:mod:`malaflow.ensemble`) the
energy is that of the members' mean LDOS and ``energy_uncertainty`` (eV) the calibrated
spread of the members' own energies. ASE's state check caches results per
configuration; the prediction is kept, so energy and forces of one configuration
cost one forward and one backward pass. Stress is not implemented.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ase.calculators.calculator import Calculator as AseCalculator
from ase.calculators.calculator import all_changes

from .ensemble import EnsembleModel, spread
from .forces import EnergyState, energy_state, forces
from .grid import Chunks
from .trained_model import TrainedModel, load_model


class Calculator(AseCalculator):
    """Energies and forces of a configuration from the LDOS a malaflow model predicts.

    ``precision``: the network's arithmetic (float64 by default: a smooth energy surface
    for forces and molecular dynamics). ``remove_net_force``: subtract the mean force
    from every atom, as pw.x does, so the forces sum to zero.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: TrainedModel | EnsembleModel | str | os.PathLike, grid_shape: Sequence[int] | None = None,
                 chunks: Chunks = None, scheme: str = "analytic", device: str = "auto",
                 precision: str = "float64", remove_net_force: bool = False, progress: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = load_model(model) if isinstance(model, (str, os.PathLike)) else model
        self.grid_shape, self.chunks, self.scheme = grid_shape, chunks, scheme
        self.device, self.precision = device, precision
        self.remove_net_force, self.progress = remove_net_force, progress
        self.evaluations = 0
        self.state: EnergyState | None = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)  # resets results if the atoms changed
        if self.state is None or system_changes:
            self.state = energy_state(self.model, self.atoms, self.grid_shape, self.chunks, self.scheme,
                                      device=self.device, precision=self.precision)
            self.evaluations += 1
        s = self.state
        free = s.free_energy
        entropy = s.observables.entropy_contribution
        self.results.update({
            "energy": free - entropy,
            "free_energy": free,
            "kind": "band" if s.terms is None else "total",
            "fermi_level": s.observables.fermi_energy,
            "n_electrons": s.observables.n_electrons,
            "extrapolated": s.extrapolated,  # share of grid points outside the training descriptors
            "warnings": list(s.warnings),
        })
        if "ldos_members" in s.predicted and "energy_uncertainty" not in self.results:
            self.results.update(ensemble_uncertainty(s, self.scheme))
        if "forces" in properties and "forces" not in self.results:
            f = forces(self.model, s, self.chunks, self.device, self.precision, self.progress)
            self.results["net_force"] = f.net_force
            self.results["forces"] = f.forces - f.net_force / len(f.forces) if self.remove_net_force else f.forces


def ensemble_uncertainty(state: EnergyState, scheme: str) -> dict[str, float]:
    """The calibrated σ over an ensemble's members of the energy the calculator returns
    (total free energy, or band energy + −TS without pseudopotentials) and of the Fermi level."""
    total = state.terms is not None
    result = spread(state.predicted, scheme, dos=state.member_dos, total_energy=total)
    sigma = result["total_energy" if total else "band_free_energy"]["std"]
    return {"energy_uncertainty": sigma, "fermi_level_uncertainty": result["fermi_energy"]["std"]}
