"""Derivatives of the total energy's density terms, for forces from a predicted LDOS.

With the band energy and entropy taken from the LDOS itself (not from eigenvalues of a
potential), the rest of the energy,

    E_dc[n, n_c] = −∫ n (v_H[n] + v_xc[n + n_c]) + E_H[n] + E_xc[n + n_c],

is an explicit functional of the valence density n and the core-correction density
n_c, and its derivatives do not cancel as they would at self-consistency:

    δE_dc/δn   = −v_H − K,        δE_dc/δn_c = v_xc − K,       K = ∫ f_xc(r, r') n(r') dr'

(the Hartree kernel applied to n is v_H; f_xc = δ²E_xc/δρδρ' is the xc kernel, applied
to n as the directional derivative of v_xc along n, from libxc's second derivatives —
no finite differences). n_c moves with the atoms (its structure factor), so
δE_dc/δn_c gives a force on each atom, as QE's ``force_cc``; the Ewald energy gives
the ions' direct force.
"""

from __future__ import annotations

import numpy as np

from ..units import BOHR_ANGSTROM, HARTREE_EV
from .energy import DensityFields, core_coefficients
from .pseudopotential import FUNCTIONALS, GGA


def xc_kernel_action(fields: DensityFields) -> np.ndarray:
    """K = d/dt v_xc[ρ + t n] at t = 0 (Hartree), ρ = n + n_c, on the grid.

    LDA: K = e_ρρ n. GGA, with e(ρ, σ), σ = |∇ρ|², δσ = 2∇ρ·∇n and the potential
    v_xc = e_ρ − 2∇·(e_σ ∇ρ):
        K = e_ρρ n + e_ρσ δσ − 2∇·[(e_ρσ n + e_σσ δσ) ∇ρ + e_σ ∇n].
    """
    from pyscf.dft import libxc

    f = fields
    rho, n, grid = f.n + f.n_core, f.n, f.grid
    name = FUNCTIONALS[f.functional]
    if f.functional not in GGA:
        _, _, (e_rr, *_), _ = libxc.eval_xc(name, np.abs(rho).reshape(-1), spin=0, deriv=2)
        return np.nan_to_num(e_rr.reshape(rho.shape) * n)
    grad = grid.gradient(rho)
    grad_n = grid.gradient(n)
    inp = np.concatenate([np.abs(rho).reshape(1, -1), grad.reshape(3, -1)])
    _, (_, e_s, *_), (e_rr, e_rs, e_ss, *_), _ = libxc.eval_xc(name, inp, spin=0, deriv=2)
    e_s, e_rr, e_rs, e_ss = (np.nan_to_num(v.reshape(rho.shape)) for v in (e_s, e_rr, e_rs, e_ss))
    d_sigma = 2.0 * (grad * grad_n).sum(axis=0)
    flux = (e_rs * n + e_ss * d_sigma)[None] * grad + e_s[None] * grad_n
    return e_rr * n + e_rs * d_sigma - 2.0 * grid.divergence(flux)


def density_gradients(fields: DensityFields) -> tuple[np.ndarray, np.ndarray]:
    """(δE_dc/δn, δE_dc/δn_c) on the grid, in Hartree per electron."""
    k = xc_kernel_action(fields)
    return -fields.v_hartree - k, fields.v_xc - k


def core_forces(fields: DensityFields, dE_dncore: np.ndarray) -> np.ndarray:
    """−∂E/∂R_i (Hartree/Bohr) through n_c(r) = Σ_G Σ_i form(G) e^{−iG·(R_i − r)}:
    ∂E/∂R_i = ΔV Re Σ_G conj(FFT[δE/δn_c])(G) · (−iG) · form(G) e^{−iG·R_i}."""
    f = fields
    forces = np.zeros_like(f.positions)
    v_g = np.fft.fftn(dE_dncore).reshape(-1)
    for atoms, g, index, form in core_coefficients(f.grid, f.species, f.ecutrho):
        phase = np.exp(-1j * (g @ f.positions[atoms].T))  # (G, atom)
        weight = (v_g[index].conj() * form)[:, None] * phase
        forces[atoms] = f.voxel * ((-1j * weight).real.T @ g) * -1.0
    return forces


def ion_forces(fields: DensityFields, dE_dncore: np.ndarray) -> np.ndarray:
    """Forces (eV/Å) on the atoms from the core correction and the Ewald energy."""
    f = fields
    return (core_forces(f, dE_dncore) + f.f_ewald) * HARTREE_EV / BOHR_ANGSTROM
