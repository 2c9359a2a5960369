"""Total energy from a density on the grid: Hartree, exchange–correlation with the
nonlinear core correction, ion–ion Ewald — in Python, on the DFT run's FFT grid.

    E = E_band − ∫ n (v_H + v_xc) + E_H + E_xc[n + n_core] + E_Ewald,   F = E − TS

(Hartree atomic units inside, eV outside). Conventions follow Quantum ESPRESSO, whose
term-by-term output these functions are checked against:

* the Hartree potential is the FFT Poisson solution without the G = 0 term (a neutral
  cell: the electrons' mean charge is cancelled by the ions');
* the core-correction density is built in reciprocal space, like QE's ``set_rhoc``:
  the UPF's radial ``PP_NLCC`` is Fourier–Bessel transformed (Simpson on the log mesh)
  for every G inside the density cutoff sphere, times the structure factor. Building
  it there — not by real-space interpolation — gives the same band-limited function QE
  uses, so the xc energies agree to the grid's precision;
* exchange–correlation is libxc (through pyscf) with the functional of the pseudo-
  potential; gradients and the GGA divergence are taken by FFT, as QE does; the energy
  density is evaluated at |n + n_core| and weighted with n + n_core (QE's treatment of
  the small negative ripples an FFT leaves);
* the Ewald sum uses the pseudopotentials' valence charges and includes the
  compensating-background term −π Z²/(2Vα²).

Against QE's Be2 snapshot 0 (its density file, which for this ultrasoft
pseudopotential already holds the augmentation charges, as QE's own density does):
Ewald −4e-7 eV, Hartree −6e-8 eV, xc +1.7e-5 eV. The one-electron term cannot be
reproduced from a density alone when the SCF is not converged: QE evaluates
−∫ n (v_H + v_xc) with the output density but the *input* potential of its last
iteration (electrons.f90, ``deband = delta_e()`` before ``v_of_rho``), while here the
potential is that of the density itself — the self-consistent value. For the shipped Be2
runs (conv_thr 0.02, "estimated scf accuracy < 0.0019 Ry") the two differ by 0.11 eV; for
the same snapshot converged to 1e-11 (tests/data/be2-converged) every term and the total
agree with QE within 0.02 meV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MalaflowError, ParameterError
from ..units import BOHR_ANGSTROM, HARTREE_EV
from .ewald import ewald_energy_forces
from .pseudopotential import FUNCTIONALS, GGA, Pseudopotential


# --------------------------------------------------------------------------- grid


@dataclass
class Grid:
    """A periodic FFT grid in Bohr: reciprocal vectors G of every grid frequency."""

    cell: np.ndarray  # Bohr, rows a1, a2, a3
    shape: tuple[int, int, int]

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    @property
    def g(self) -> np.ndarray:
        """(nx, ny, nz, 3) G vectors in 1/Bohr (numpy's FFT frequency order)."""
        b = 2.0 * np.pi * np.linalg.inv(self.cell).T
        m = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in self.shape], indexing="ij")
        return m[0][..., None] * b[0] + m[1][..., None] * b[1] + m[2][..., None] * b[2]

    def gradient(self, f: np.ndarray) -> np.ndarray:
        """∇f (3, nx, ny, nz) of a periodic real function, by FFT."""
        fg = np.fft.fftn(f)
        g = self.g
        return np.stack([np.fft.ifftn(1j * g[..., k] * fg).real for k in range(3)])

    def divergence(self, v: np.ndarray) -> np.ndarray:
        g = self.g
        return sum(np.fft.ifftn(1j * g[..., k] * np.fft.fftn(v[k])).real for k in range(3))


def grid_from(cell_angstrom, shape) -> Grid:
    return Grid(np.asarray(cell_angstrom, dtype=float) / BOHR_ANGSTROM, tuple(int(n) for n in shape))


# --------------------------------------------------------------------------- terms


def hartree(n: np.ndarray, grid: Grid) -> tuple[float, np.ndarray]:
    """E_H (Hartree) and v_H (Hartree) of a density n (1/Bohr³); the G = 0 term is dropped."""
    ng = np.fft.fftn(n) / n.size
    g2 = (grid.g**2).sum(axis=-1)
    g2[0, 0, 0] = 1.0
    vg = 4.0 * np.pi * ng / g2
    vg[0, 0, 0] = 0.0
    energy = 0.5 * grid.volume * float((vg * ng.conj()).real.sum())
    return energy, np.fft.ifftn(vg).real * n.size


def core_coefficients(grid: Grid, species: list[Pseudopotential], ecutrho_ry: float | None):
    """Per pseudopotential with a core correction: (its atoms, the G vectors inside the
    density cutoff sphere |G|² ≤ ecutrho (Ry; None: every G of the grid), the flat grid
    index of each, and the form factor there)."""
    g = grid.g
    g2 = (g**2).sum(axis=-1)
    inside = np.flatnonzero(g2 <= (np.inf if ecutrho_ry is None else ecutrho_ry * (1 + 1e-12)))
    gabs = np.sqrt(g2.reshape(-1)[inside])
    unique, index = np.unique(np.round(gabs, 10), return_inverse=True)
    for pp in {id(p): p for p in species}.values():
        if pp.core_density is not None:
            atoms = [i for i, p in enumerate(species) if p is pp]
            yield atoms, g.reshape(-1, 3)[inside], inside, pp.core_form_factor(unique, grid.volume)[index]


def core_density(grid: Grid, positions_bohr: np.ndarray, species: list[Pseudopotential],
                 ecutrho_ry: float | None) -> np.ndarray:
    """n_core(r) (1/Bohr³): Σ_s form factor_s(|G|) × structure factor_s(G) inside the
    density cutoff sphere, on the grid."""
    coeff = np.zeros(int(np.prod(grid.shape)), dtype=complex)
    for atoms, g, index, form in core_coefficients(grid, species, ecutrho_ry):
        coeff[index] += form * np.exp(-1j * (g @ positions_bohr[atoms].T)).sum(axis=1)
    return np.fft.ifftn(coeff.reshape(grid.shape)).real * coeff.size


def xc(n: np.ndarray, n_core: np.ndarray, grid: Grid, functional: str) -> tuple[float, np.ndarray]:
    """E_xc[n + n_core] (Hartree) and v_xc (Hartree) with libxc."""
    from pyscf.dft import libxc

    if functional not in FUNCTIONALS:
        raise ParameterError(
            f"exchange–correlation functional {functional!r} is not supported; supported: {', '.join(sorted(FUNCTIONALS))}"
        )
    rho = n + n_core
    size = rho.size
    if functional in GGA:
        grad = grid.gradient(rho)
        inp = np.concatenate([np.abs(rho).reshape(1, -1), grad.reshape(3, -1)])
        exc, (vrho, vsigma, *_), *_ = libxc.eval_xc(FUNCTIONALS[functional], inp, spin=0, deriv=1)
        vsigma = vsigma.reshape(rho.shape)
        v = vrho.reshape(rho.shape) - 2.0 * grid.divergence(vsigma[None] * grad)
    else:
        exc, (vrho, *_), *_ = libxc.eval_xc(FUNCTIONALS[functional], np.abs(rho).reshape(-1), spin=0, deriv=1)
        v = vrho.reshape(rho.shape)
    exc = np.nan_to_num(exc.reshape(rho.shape))
    energy = grid.volume / size * float((rho * exc).sum())
    return energy, np.nan_to_num(v)


# --------------------------------------------------------------------------- total


@dataclass
class EnergyTerms:
    """All in eV. ``one_electron`` = band energy − ∫ n (v_H + v_xc), QE's grouping."""

    band_energy: float
    one_electron: float
    hartree: float
    xc: float
    ewald: float
    entropy_contribution: float

    @property
    def total_energy(self) -> float:
        return self.one_electron + self.hartree + self.xc + self.ewald + self.entropy_contribution

    @property
    def free_energy(self) -> float:
        """QE's "total energy" is already the free energy E − TS at finite smearing."""
        return self.total_energy

    @property
    def internal_energy(self) -> float:
        return self.total_energy - self.entropy_contribution


@dataclass
class DensityFields:
    """A valence density with its atoms on the FFT grid and the potentials it makes
    (Hartree atomic units): what the energy terms and their gradients are built from."""

    grid: Grid
    n: np.ndarray  # valence density, 1/Bohr³
    n_core: np.ndarray
    positions: np.ndarray  # Bohr
    species: list[Pseudopotential]
    functional: str
    ecutrho: float | None
    e_hartree: float
    v_hartree: np.ndarray
    e_xc: float
    v_xc: np.ndarray
    e_ewald: float  # ion–ion energy, Hartree
    f_ewald: np.ndarray  # its forces, Hartree/Bohr: one Ewald sum serves energy and forces

    @property
    def voxel(self) -> float:
        return self.grid.volume / self.n.size


def density_fields(
    density_angstrom: np.ndarray, cell: np.ndarray, positions: np.ndarray, numbers: np.ndarray,
    pseudopotentials: dict[str, Pseudopotential], ecutrho_ry: float | None, negative_tolerance: float = 1e-3,
) -> DensityFields:
    """Hartree and xc energies and potentials of a valence density on the grid (1/Å³)
    with the core correction of the atoms (Å) and their UPFs."""
    from ase.data import chemical_symbols

    n = np.asarray(density_angstrom, dtype=np.float64) * BOHR_ANGSTROM**3
    grid = grid_from(cell, n.shape)
    negative = -n[n < 0].sum() / max(abs(n).sum(), 1e-300)
    if negative > negative_tolerance:
        raise MalaflowError(
            f"the density has negative regions holding {100 * negative:.2f}% of its charge "
            f"(tolerance {100 * negative_tolerance:.2f}%): not a physical density"
        )
    missing = sorted({chemical_symbols[z] for z in numbers} - set(pseudopotentials))
    if missing:
        raise MalaflowError(f"no pseudopotential for {missing}")
    species = [pseudopotentials[chemical_symbols[z]] for z in numbers]
    functionals = {p.functional for p in species}
    if len(functionals) > 1:
        raise MalaflowError(f"the pseudopotentials use different functionals: {sorted(functionals)}")
    functional = functionals.pop()
    pos = np.asarray(positions, dtype=float) / BOHR_ANGSTROM
    e_h, v_h = hartree(n, grid)
    n_core = core_density(grid, pos, species, ecutrho_ry)
    e_xc, v_xc = xc(n, n_core, grid, functional)
    e_ewald, f_ewald = ewald_energy_forces(pos, np.array([p.z_valence for p in species]), grid.cell)
    return DensityFields(grid, n, n_core, pos, species, functional, ecutrho_ry, e_h, v_h, e_xc, v_xc, e_ewald, f_ewald)


def terms_of(fields: DensityFields, band_energy: float, entropy_contribution: float) -> EnergyTerms:
    """The energy terms (eV) of a density's fields, with the band energy and −TS (eV)."""
    f = fields
    deband = -f.voxel * float((f.n * (f.v_hartree + f.v_xc)).sum())
    return EnergyTerms(
        band_energy=band_energy,
        one_electron=band_energy + deband * HARTREE_EV,
        hartree=f.e_hartree * HARTREE_EV,
        xc=f.e_xc * HARTREE_EV,
        ewald=f.e_ewald * HARTREE_EV,
        entropy_contribution=entropy_contribution,
    )


def energy_terms(
    density_angstrom: np.ndarray, cell: np.ndarray, positions: np.ndarray, numbers: np.ndarray,
    pseudopotentials: dict[str, Pseudopotential], band_energy: float, entropy_contribution: float,
    ecutrho_ry: float | None, negative_tolerance: float = 1e-3,
) -> EnergyTerms:
    """All energy terms from a valence density on the grid (1/Å³), atoms (Å) and UPFs."""
    fields = density_fields(density_angstrom, cell, positions, numbers, pseudopotentials, ecutrho_ry,
                            negative_tolerance)
    return terms_of(fields, band_energy, entropy_contribution)
