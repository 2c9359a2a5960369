"""An ASE calculator backed by a trained malaflow model.

``atoms.calc = malaflow.Calculator(model)`` and ``atoms.get_potential_energy()`` gives
the energy from the predicted LDOS: with the training DFT's pseudopotentials (copied
beside the model) the total energy — ``free_energy`` is F = E − TS, ``energy`` is
E — otherwise the band energy (``results["kind"]`` says which). ``calc.results`` also
holds the Fermi level and the electron count. ASE's state check caches results per
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ase.calculators.calculator import Calculator as AseCalculator
from ase.calculators.calculator import all_changes

from .trained_model import TrainedModel, load_model
from .errors import MalaflowError
from .observables import energy_terms_from
from .trust import observables_with_trust
from .grid import Chunks


class Calculator(AseCalculator):
    """Energies of a configuration from the LDOS a malaflow model predicts."""

    implemented_properties = ["energy", "free_energy"]

    def __init__(self, model: TrainedModel | str, grid_shape: Sequence[int] | None = None,
                 chunks: Chunks = None, scheme: str = "analytic", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = load_model(model) if isinstance(model, str) else model
        self.grid_shape, self.chunks, self.scheme = grid_shape, chunks, scheme
        self.evaluations = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        predicted = self.model.predict(self.atoms, grid_shape=self.grid_shape, chunks=self.chunks)
        obs, share = observables_with_trust(predicted, self.scheme)
        self.evaluations += 1
        try:
            terms = energy_terms_from(predicted, obs, self.scheme)
            free, entropy, kind = terms.total_energy, terms.entropy_contribution, "total"
        except MalaflowError:
            free, entropy, kind = obs.band_energy + obs.entropy_contribution, obs.entropy_contribution, "band"
        self.results = {
            "energy": free - entropy,
            "free_energy": free,
            "kind": kind,
            "fermi_level": obs.fermi_energy,
            "n_electrons": obs.n_electrons,
            "extrapolated": share,  # share of grid points outside the training descriptors
            "warnings": list(predicted.attrs["warnings"]),
        }
