"""`malaflow.observables(ds)`: the physics scalars of a snapshot, via its target plugin."""

from __future__ import annotations

from typing import Any

import xarray as xr

from .plugins import get_plugin


def observables(ds: xr.Dataset, target: str = "ldos", scheme: str = "analytic", **options: Any):
    """Fermi level, electron count, band energy and −TS of a snapshot (eV, K).

    The work is the target plugin's (``ldos`` by default); ``scheme`` is
    ``"analytic"`` (exact Fermi–Dirac integrals of a piecewise-linear DOS) or
    ``"quadrature"``. Options: ``temperature``, ``n_electrons``, ``fermi_energy``.
    """
    return get_plugin("targets", target)().observables(ds, scheme=scheme, **options)
