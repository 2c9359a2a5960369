"""Observables of the ionic structure from configurations (one ``ase.Atoms`` or a
trajectory of them): what molecular dynamics and Monte Carlo runs are for."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import ParameterError


def frames_of(configurations) -> list:
    """A list of ase.Atoms from one Atoms, a sequence of them, or a trajectory file path."""
    from ase import Atoms

    if isinstance(configurations, Atoms):
        return [configurations]
    if isinstance(configurations, (str, bytes)) or hasattr(configurations, "__fspath__"):
        from ase.io import read

        return read(configurations, index=":")
    frames = list(configurations)
    if not frames:
        raise ParameterError("no configurations given")
    return frames


def radial_distribution(configurations: Iterable, r_max: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """g(r) at the bin centres of ``bins`` equal bins on [0, r_max] (Å), averaged over the
    frames: pair counts n(r) of every atom with all others, periodic images included
    (ASE's neighbour list: any r_max, not only half the cell), divided by the ideal-gas
    count N ρ 4π/3 (r₂³ − r₁³) of each shell, ρ = N/V. g → 1 for an uncorrelated
    configuration; ∫ ρ g 4πr² dr over the first peak is the coordination number."""
    from ase.neighborlist import neighbor_list

    if not r_max > 0 or bins < 1:
        raise ParameterError(f"the RDF needs r_max > 0 and bins ≥ 1, got r_max={r_max}, bins={bins}")
    edges = np.linspace(0.0, r_max, bins + 1)
    shells = 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(bins)
    frames = frames_of(configurations)
    for atoms in frames:
        if not all(atoms.pbc):
            raise ParameterError("the RDF here is for periodic cells (pbc on all axes)")
        d = neighbor_list("d", atoms, r_max)
        n = len(atoms)
        g += np.histogram(d, bins=edges)[0] / (n * n / atoms.get_volume() * shells)
    return 0.5 * (edges[1:] + edges[:-1]), g / len(frames)
