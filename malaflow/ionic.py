"""Observables of the ionic structure from configurations (one ``ase.Atoms`` or a
trajectory of them): what molecular dynamics and Monte Carlo runs are for.

The radial distribution g(r), the three-particle correlation g₃(r₁, r₂, r₃) and the
static structure factor S(k), with MALA's binning (``bins`` equal bins on (0, max]; a
value lands in bin ⌈x/Δ⌉, reported at the bin centre) and periodic images included.
g and g₃ are normalised by the ideal gas of the same density, so both → 1 without
correlations (MALA's g₃ carries an extra factor 1/Δr and counts each pair once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def minimum_image_radius(atoms) -> float:
    """Half the smallest distance between opposite faces of the cell: the largest radius
    whose sphere the cell encloses (MALA's ``rMax="mic"``)."""
    cell = np.asarray(atoms.cell)
    volume = abs(np.linalg.det(cell))
    return min(volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)) / 2


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
    shells = shell_volumes(edges)
    g = np.zeros(bins)
    frames = _periodic_frames(configurations, "RDF")
    for atoms in frames:
        d = neighbor_list("d", atoms, r_max)
        n = len(atoms)
        g += np.histogram(d, bins=edges)[0] / (n * n / atoms.get_volume() * shells)
    return 0.5 * (edges[1:] + edges[:-1]), g / len(frames)


def shell_volumes(edges: np.ndarray) -> np.ndarray:
    """Volumes 4π/3 (r₂³ − r₁³) of the spherical shells between consecutive ``edges`` (Å³)."""
    return 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)


def _periodic_frames(configurations, what: str) -> list:
    frames = frames_of(configurations)
    if not all(all(atoms.pbc) for atoms in frames):
        raise ParameterError(f"the {what} here is for periodic cells (pbc on all axes)")
    return frames


def three_particle_correlation(configurations: Iterable, r_max: float, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """g₃(r₁, r₂, r₃) on a bins³ grid of bin centres (Å), averaged over the frames: for
    every atom i and every ordered pair (j, k) of its neighbours within ``r_max`` (periodic
    images included) with r₁ = |r_ij|, r₂ = |r_ik|, r₃ = |r_jk| < r_max, one count, divided
    by the ideal-gas count N ρ² 8π² r₁r₂r₃ Δr³ (doi:10.1063/5.0048450, eq. 17). Returns
    (bin centres, g₃); g₃ is symmetric in r₁ ↔ r₂."""
    from ase.neighborlist import neighbor_list

    if not r_max > 0 or bins < 1:
        raise ParameterError(f"the TPCF needs r_max > 0 and bins ≥ 1, got r_max={r_max}, bins={bins}")
    dr = r_max / bins
    centres = (np.arange(bins) + 0.5) * dr
    ideal = 8.0 * np.pi**2 * np.einsum("i,j,k->ijk", centres, centres, centres) * dr**3
    g3 = np.zeros((bins, bins, bins))
    frames = _periodic_frames(configurations, "TPCF")
    for atoms in frames:
        first, vectors = neighbor_list("iD", atoms, r_max)
        counts = np.zeros((bins + 1,) * 3)
        for i in range(len(atoms)):
            v = vectors[first == i]  # neighbour vectors of atom i (images distinct)
            r = np.linalg.norm(v, axis=1)
            r3 = np.linalg.norm(v[:, None, :] - v[None, :, :], axis=2)
            j, k = np.nonzero((r3 < r_max) & ~np.eye(len(v), dtype=bool))
            index = [np.ceil(x / dr).astype(int) for x in (r[j], r[k], r3[j, k])]
            np.add.at(counts, tuple(np.clip(x, 0, bins) for x in index), 1.0)
        density = len(atoms) / atoms.get_volume()
        g3 += counts[1:, 1:, 1:] / (len(atoms) * density**2 * ideal)
    return centres, g3 / len(frames)


def static_structure_factor(configurations: Iterable, k_max: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """S(k) = |Σ_j exp(i k·r_j)|² / N over the cell's reciprocal lattice vectors k ≠ 0 with
    |k| ≤ ``k_max`` (1/Å), averaged over the vectors in each |k| bin and over the frames
    (MALA's "direct" method, here over all directions). Bins without a vector are NaN.
    Returns (bin centres, S); a crystal shows S = N at its Bragg vectors."""
    if not k_max > 0 or bins < 1:
        raise ParameterError(f"S(k) needs k_max > 0 and bins ≥ 1, got k_max={k_max}, bins={bins}")
    dk = k_max / bins
    total, seen = np.zeros(bins + 1), np.zeros(bins + 1)
    for atoms in _periodic_frames(configurations, "structure factor"):
        reciprocal = 2.0 * np.pi * np.asarray(atoms.cell.reciprocal())
        # integer ranges that hold the sphere |k| ≤ k_max: n_i ≤ k_max |a_i| / 2π
        n = np.floor(k_max * np.linalg.norm(np.asarray(atoms.cell), axis=1) / (2.0 * np.pi)).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij"), axis=-1).reshape(-1, 3)
        k = grid @ reciprocal
        length = np.linalg.norm(k, axis=1)
        keep = (length > 0) & (length <= k_max)
        k, length = k[keep], length[keep]
        for start in range(0, len(k), 4096):  # memory: vectors × atoms per block
            phase = k[start:start + 4096] @ atoms.positions.T
            s = (np.cos(phase).sum(axis=1) ** 2 + np.sin(phase).sum(axis=1) ** 2) / len(atoms)
            index = np.ceil(length[start:start + 4096] / dk).astype(int)
            np.add.at(total, index, s)
            np.add.at(seen, index, 1.0)
    with np.errstate(invalid="ignore"):
        factor = total[1:] / seen[1:]
    return (np.arange(bins) + 0.5) * dk, factor


@dataclass
class IonicSummary:
    """What ``malaflow structure`` prints and plots."""

    rdf: tuple[np.ndarray, np.ndarray]
    ssf: tuple[np.ndarray, np.ndarray]
    tpcf: tuple[np.ndarray, np.ndarray]
    text: str


def ionic_summary(configurations: Iterable, charges: Mapping[str, float] | None = None, r_max: float | None = None,
                  bins: int = 100, k_max: float = 8.0, tpcf_bins: int = 20) -> IonicSummary:
    """g(r), S(k), g₃ of the frames (to ``r_max``, default the larger of 5 Å and half the
    smallest cell height), with the first g(r) peak — the highest, which in a crystal or a
    liquid is the nearest-neighbour shell — the coordination number (ρ∫4πr²g dr to the
    first minimum after it), the main S(k) peak and, given the ions' charges, the Ewald
    energy per atom."""
    frames = frames_of(configurations)
    # periodic images make any radius meaningful; a small cell's own sphere would be empty
    r_max = r_max or max(5.0, min(minimum_image_radius(a) for a in frames))
    r, g = radial_distribution(frames, r_max, bins)
    k, s = static_structure_factor(frames, k_max, max(10, bins // 2))
    tpcf = three_particle_correlation(frames, r_max, tpcf_bins)
    peak = int(np.argmax(g))
    after = g[peak:]
    minimum = peak + int(np.argmax(np.diff(after) > 0)) if np.any(np.diff(after) > 0) else len(g) - 1
    density = np.mean([len(a) / a.get_volume() for a in frames])
    shells = shell_volumes(np.linspace(0.0, r_max, bins + 1))  # the bins of radial_distribution
    coordination = float(density * np.sum((g * shells)[: minimum + 1]))
    lines = [f"{len(frames)} frame(s), {len(frames[0])} atoms, density {density:.5f} atoms/Å³"]
    if g[peak] > 0:
        lines.append(f"g(r): first peak at {r[peak]:.3f} Å (g = {g[peak]:.2f}); coordination number "
                     f"{coordination:.2f} (to the first minimum, {r[minimum]:.3f} Å)")
    else:
        lines.append(f"g(r): no pair of atoms closer than {r_max:.3f} Å")
    if np.any(np.isfinite(s)):
        top = int(np.nanargmax(s))
        lines.append(f"S(k): highest peak at k = {k[top]:.3f} 1/Å (S = {s[top]:.2f})")
    lines.append(f"g₃: {tpcf_bins}³ bins to {r_max:.3f} Å")
    if charges:
        lines.append(f"Ewald (ion–ion) energy: {ewald_per_atom(frames, charges):.6f} eV/atom")
    return IonicSummary((r, g), (k, s), tpcf, "\n".join(lines))


def ewald_per_atom(frames: list, charges: Mapping[str, float]) -> float:
    """Mean ion–ion (Ewald) energy per atom (eV) of point ions with the given charges."""
    from .physics.ewald import ewald
    from .units import BOHR_ANGSTROM, HARTREE_EV

    missing = sorted({s for a in frames for s in a.get_chemical_symbols()} - set(charges))
    if missing:
        raise ParameterError(f"no ion charge for {', '.join(missing)} (e.g. --valence {missing[0]}=2)")
    energies = [ewald(a.positions / BOHR_ANGSTROM, [charges[s] for s in a.get_chemical_symbols()],
                      np.asarray(a.cell) / BOHR_ANGSTROM) * HARTREE_EV / len(a) for a in frames]
    return float(np.mean(energies))
