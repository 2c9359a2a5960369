"""Ion–ion energy and forces of point charges in a neutralising background, by Ewald
summation (Hartree atomic units), with both sums converged below 1e-15 of their
largest term.

    E = ½ Σ_{i,j,L}' q_i q_j erfc(α r)/r  +  2π/V Σ_{G≠0} e^{−G²/4α²}/G² |S(G)|²
        − α/√π Σ q_i²  −  π (Σ q_i)²/(2Vα²),           S(G) = Σ_j q_j e^{iG·R_j}

The forces are the exact derivatives of the same truncated sums: −∂E/∂R_i is
Σ_{j,L} q_i q_j [erfc(αr)/r² + 2α/√π e^{−α²r²}/r] (R_i − R_j − L)/r in real space and
(4π q_i/V) Σ_G e^{−G²/4α²}/G² · G · Im(e^{iG·R_i} S(G)*) in reciprocal space.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc


def ewald_energy_forces(positions_bohr: np.ndarray, charges, cell_bohr: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy (Hartree) and forces (Hartree/Bohr, (n, 3)) of the ions."""
    cell = np.asarray(cell_bohr, dtype=float)
    pos = np.asarray(positions_bohr, dtype=float)
    volume = abs(np.linalg.det(cell))
    q = np.asarray(charges, dtype=float)
    alpha = math.sqrt(math.pi) * (len(q) / volume**2) ** (1 / 6)
    r_max, g_max = 6.0 / alpha, 12.0 * alpha  # erfc(6) ~ 2e-17, exp(-36) ~ 2e-16
    heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = [int(math.ceil(r_max / h)) + 1 for h in heights]
    shifts = np.array(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij")).reshape(3, -1).T @ cell
    real, forces = 0.0, np.zeros_like(pos)
    for i in range(len(q)):
        d = pos[None, :, :] - pos[i] + shifts[:, None, :]  # from atom i to the images of every j
        r = np.linalg.norm(d, axis=2)
        mask = (r > 1e-10) & (r < r_max)
        qq = q[i] * np.broadcast_to(q[None, :], r.shape)[mask]
        rm = r[mask]
        real += 0.5 * float((qq * erfc(alpha * rm) / rm).sum())
        slope = qq * (erfc(alpha * rm) / rm**2 + 2 * alpha / math.sqrt(math.pi) * np.exp(-(alpha * rm) ** 2) / rm)
        forces[i] -= (slope[:, None] * d[mask] / rm[:, None]).sum(axis=0)
    b = 2.0 * np.pi * np.linalg.inv(cell).T
    m = [int(math.ceil(g_max / (2 * np.pi / h))) + 1 for h in heights]
    ms = np.array(np.meshgrid(*[np.arange(-k, k + 1) for k in m], indexing="ij")).reshape(3, -1).T
    g = ms @ b
    g2 = (g**2).sum(axis=1)
    keep = (g2 > 1e-12) & (g2 < g_max**2)
    g, g2 = g[keep], g2[keep]
    phases = np.exp(1j * g @ pos.T)  # (G, atom)
    s = (q[None, :] * phases).sum(axis=1)
    kernel = np.exp(-g2 / (4 * alpha**2)) / g2
    recip = 2.0 * np.pi / volume * float((kernel * np.abs(s) ** 2).sum())
    forces += 4.0 * np.pi / volume * q[:, None] * ((kernel[:, None] * (phases * s.conj()[:, None]).imag).T @ g)
    self_term = -alpha / math.sqrt(math.pi) * float((q**2).sum())
    background = -math.pi * float(q.sum()) ** 2 / (2.0 * volume * alpha**2)
    return real + recip + self_term + background, forces


def ewald(positions_bohr: np.ndarray, charges, cell_bohr: np.ndarray) -> float:
    """Ion–ion energy (Hartree); see :func:`ewald_energy_forces`."""
    return ewald_energy_forces(positions_bohr, charges, cell_bohr)[0]
