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


def observables_table(ds: xr.Dataset, scheme: str = "analytic") -> str:
    """Our observables beside the DFT reference values stored in the snapshot."""
    obs = observables(ds, scheme=scheme)
    ref = ds.attrs.get("reference") or {}
    rows = [
        ("Fermi energy (eV)", obs.fermi_energy, ds.attrs.get("fermi_energy")),
        ("electrons", obs.n_electrons, ds.attrs.get("n_electrons")),
        ("band energy (eV)", obs.band_energy, ref.get("band_energy")),
        ("-TS (eV)", obs.entropy_contribution, ref.get("entropy_contribution")),
    ]
    lines = [f"{'quantity':<20} {'from LDOS':>14} {'DFT reference':>14} {'difference':>12}"]
    for name, ours, dft in rows:
        diff = f"{ours - dft:+12.6f}" if dft is not None else f"{'':>12}"
        dft_s = f"{dft:14.6f}" if dft is not None else f"{'-':>14}"
        lines.append(f"{name:<20} {ours:14.6f} {dft_s} {diff}")
    lines.append(f"(scheme {obs.scheme}, T = {obs.temperature:.2f} K, Fermi level self-consistent)")
    return "\n".join(lines)
