"""The DOS and LDOS targets. The physics is the core's (:mod:`malaflow.physics.dos`);
these classes say which variable holds the target and how it becomes a DOS and a density."""

from __future__ import annotations

import numpy as np
import xarray as xr

from malaflow import Target, hookimpl
from malaflow.physics.dos import check_temperature, density, density_of_states


class DOSTarget(Target):
    """D(ε) in 1/eV (variable ``dos``) → Fermi level, electron count, band energy, −TS."""

    name = "dos"
    variable = "dos"
    description = "DOS → Fermi level, band energy, entropy (analytic/quadrature)"

    def dos(self, ds: xr.Dataset) -> xr.DataArray:
        """The snapshot's DOS D(ε) in 1/eV."""
        return ds["dos"]


class LDOSTarget(Target):
    """LDOS(r, ε) in 1/(eV·Å³) → DOS, density, N, Fermi level, band energy, −TS."""

    name = "ldos"
    variable = "ldos"
    description = "LDOS → DOS, density, Fermi level, band energy, entropy (analytic/quadrature)"

    def dos(self, ds: xr.Dataset) -> xr.DataArray:
        """D(ε) = Σ_r LDOS ΔV in 1/eV (lazy if the dataset is)."""
        return density_of_states(ds["ldos"], np.array(ds.attrs["cell"]))

    def density(self, ds: xr.Dataset, fermi_energy: float, scheme: str = "analytic") -> xr.DataArray:
        """The snapshot's electron density n(r) in 1/Å³ at μ = ``fermi_energy`` (lazy)."""
        return density(ds["ldos"], fermi_energy, check_temperature(ds.attrs.get("temperature")), scheme)


@hookimpl
def malaflow_targets() -> list[type]:
    return [DOSTarget, LDOSTarget]
