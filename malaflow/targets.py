"""The base class of target plugins: what a model learns on the grid, and how it becomes
the physics scalars.

A target names the dataset variable it reads (``variable``: ``"ldos"`` for the LDOS)
and says how that variable becomes a DOS D(ε) in 1/eV (``dos``) and, where it can, an
electron density (``density``). The observables — Fermi level at fixed electron count,
band energy, −TS — follow from the DOS alone, with the core's Fermi–Dirac integrals
(:mod:`malaflow.physics.dos`), so a plugin rarely overrides :meth:`Target.observables`.
"""

from __future__ import annotations

from typing import ClassVar

import xarray as xr

from .errors import ParameterError, PluginError
from .physics.dos import (
    Observables, band_energy, check_finite, check_temperature, electron_count, entropy_contribution, fermi_level,
)
from .plugins import get_plugin

#: the target of models and predictions that do not name one
DEFAULT_TARGET = "ldos"


class Target:
    """Base class of target plugins: set ``name``, ``variable`` and override :meth:`dos`
    (and :meth:`density` if the target holds spatial information)."""

    kind = "target"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the dataset variable holding the target (what a model trained on it predicts)
    variable: ClassVar[str] = ""

    def dos(self, ds: xr.Dataset) -> xr.DataArray:
        """The snapshot's DOS D(ε) in 1/eV on its ``energy`` coordinate (lazy if it can be)."""
        raise NotImplementedError

    def density(self, ds: xr.Dataset, fermi_energy: float, scheme: str = "analytic") -> xr.DataArray:
        """The electron density n(r) in 1/Å³ at μ = ``fermi_energy``."""
        raise PluginError(f"the {self.name!r} target holds no spatial information: it gives no electron density")

    def observables(
        self, ds: xr.Dataset, scheme: str = "analytic", temperature: float | None = None,
        n_electrons: float | None = None, fermi_energy: float | None = None,
    ) -> Observables:
        """All scalars of a snapshot dataset; μ self-consistent unless ``fermi_energy`` is given."""
        temperature = check_temperature(temperature if temperature is not None else ds.attrs.get("temperature"))
        n_e = n_electrons if n_electrons is not None else ds.attrs.get("n_electrons")
        if n_e is None:
            raise ParameterError("the electron count is unknown: pass n_electrons=")
        energies = ds["energy"].values
        dos = check_finite(self.dos(ds).values, self.name.upper())
        mu = fermi_energy if fermi_energy is not None else fermi_level(dos, energies, temperature, n_e, scheme)
        return Observables(
            fermi_energy=mu,
            n_electrons=electron_count(dos, energies, mu, temperature, scheme),
            band_energy=band_energy(dos, energies, mu, temperature, scheme),
            entropy_contribution=entropy_contribution(dos, energies, mu, temperature, scheme),
            temperature=temperature,
            scheme=scheme,
        )


def get_target(name: str = DEFAULT_TARGET) -> Target:
    """A target plugin instance by registered name."""
    return get_plugin("targets", name)()
