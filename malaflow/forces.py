"""Forces from the predicted LDOS: F_i = −∂F/∂R_i of the model's own free energy.

The free energy is a function of the predicted LDOS L(r, ε_k) and of the atoms:

    F = E_b − TS − ∫ n (v_H + v_xc) + E_H + E_xc[n + n_c] + E_Ewald,

with D_k = ΔV Σ_r L(r, k), E_b = Σ_k w¹_k(μ) D_k, −TS = −k_BT Σ_k wˢ_k(μ) D_k,
n(r) = Σ_k w⁰_k(μ) L(r, k) (the weights of :func:`~malaflow.physics.dos.energy_weights`)
and the Fermi level μ fixed by N = Σ_k w⁰_k(μ) D_k. R enters through the descriptors
(→ network → L → every term), through n_c(R) and through Ewald.

**The Fermi level.** Add the constraint with a multiplier, Λ = F − λ (N(L, μ) − N₀).
∂Λ/∂μ = 0 fixes λ = (∂F/∂μ)/(∂N/∂μ), and then dF/dL = ∂Λ/∂L: μ's own derivative is
never needed. For the band part, ∂(E_b − TS)/∂μ = μ ∂N/∂μ exactly — pointwise
ε ∂f/∂μ − k_BT ∂s/∂μ = μ ∂f/∂μ, so it holds for any scheme that integrates the DOS
against the kernels, the analytic one included — and the weights become those of the
grand potential, w¹ − k_BT wˢ − μ w⁰: that part of the μ-dependence cancels. The density
terms also depend on μ through n; they leave one number, c = ∫ g ∂n/∂μ / (∂N/∂μ), with
g = δE_dc/δn = −v_H − K (:mod:`malaflow.physics.gradients`). So

    ∂F/∂L(r, k) = ΔV [w¹_k − k_BT wˢ_k − μ w⁰_k + (g(r) − c) w⁰_k],

known at every point once μ, g and c are — global quantities from two passes over
the grid (the DOS; then n and ∂n/∂μ). A third pass runs each chunk's points through
the differentiable descriptors and the network with this as the seed of the backward
pass and adds up ∂F/∂R over chunks, so memory follows the chunk as in prediction.
The core-correction and Ewald forces come from the fields on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .descriptors import Descriptor, Structure, check_features, grid_blocks, point_batches
from .devices import torch_device, torch_dtype
from .errors import MalaflowError
from .grid import SPATIAL_DIMS, Chunks, spatial_chunks, voxel_volume
from .implementations import differentiable
from .observables import find_pseudopotentials
from .physics.dos import Observables, energy_weights, occupation_slope_weights
from .physics.energy import DensityFields, EnergyTerms, density_fields, terms_of
from .physics.gradients import density_gradients, ion_forces
from .runtime import run_tasks, session_client, task_resources
from .ensemble import member_dos
from .trust import observables_with_trust
from .units import HARTREE_EV, KB_EV

#: a prediction whose LDOS and descriptors fit in this many bytes stays in memory: the
#: descriptors are then computed once for energy and forces; larger ones are recomputed
KEEP_BYTES = 256 * 2**20

#: grid points per backward pass of the descriptors: bounds the autograd graph
#: (≈ 0.5 GB for 256 points at twojmax 10 in a dense metal)
BACKWARD_BATCH_POINTS = 256


@dataclass
class EnergyState:
    """A prediction with its energy and what its forces need (from passes 1 and 2)."""

    predicted: xr.Dataset
    observables: Observables
    extrapolated: float
    terms: EnergyTerms | None  # None: no pseudopotentials, band energy and −TS only
    fields: DensityFields | None
    density_slope: np.ndarray  # ∂n/∂μ on the grid, 1/(Å³·eV)
    warnings: list[str] = field(default_factory=list)
    member_dos: np.ndarray | None = None  # an ensemble's members' DOS (member, energy), from pass 1

    @property
    def free_energy(self) -> float:
        if self.terms is not None:
            return self.terms.total_energy
        return self.observables.band_energy + self.observables.entropy_contribution


@dataclass
class Forces:
    """Forces (eV/Å) on the atoms and their sum before any removal (the grid's egg-box
    effect: a rigid shift of the atoms against the fixed grid changes the energy)."""

    forces: np.ndarray
    net_force: np.ndarray


def energy_state(model: Any, structure: Any, grid_shape: Any = None, chunks: Chunks = None,
                 scheme: str = "analytic", pseudo_dir: str | Path | None = None, device: str = "auto",
                 precision: str = "float64") -> EnergyState:
    """Predict, then the observables and energy terms: the DOS in one pass over the
    descriptor chunks, the density and ∂n/∂μ together in a second (from the LDOS kept
    in memory if it is small, see :data:`KEEP_BYTES`)."""
    if model.variable != "ldos":
        raise MalaflowError(f"forces need a model of the LDOS; this one predicts {model.variable!r}")
    predicted = model.predict(structure, grid_shape=grid_shape, chunks=chunks, device=device, precision=precision,
                              with_descriptors=True)
    if predicted[model.variable].nbytes + predicted["descriptors"].nbytes <= KEEP_BYTES:
        predicted = predicted.persist()
    else:
        predicted = predicted.drop_vars("descriptors")
    members = {"dos": member_dos(predicted)} if "ldos_members" in predicted else {}
    obs, share, members = observables_with_trust(predicted, scheme, also=members)
    members = members["dos"].values if members else None
    e = predicted["energy"].values
    w = np.stack([energy_weights(e, obs.fermi_energy, obs.temperature, "fermi", 0, scheme),
                  occupation_slope_weights(e, obs.fermi_energy, obs.temperature, scheme)])
    both = xr.dot(predicted[model.variable], xr.DataArray(w, dims=("which", "energy")), dim="energy")
    density, slope = both.transpose("which", *SPATIAL_DIMS).values
    try:
        pseudopotentials = find_pseudopotentials(predicted, pseudo_dir)
    except MalaflowError:
        return EnergyState(predicted, obs, share, None, None, slope, list(predicted.attrs["warnings"]), members)
    fields = density_fields(density, np.array(predicted.attrs["cell"]), predicted["positions"].values,
                            predicted["numbers"].values, pseudopotentials, predicted.attrs.get("ecutrho"))
    terms = terms_of(fields, obs.band_energy, obs.entropy_contribution)
    return EnergyState(predicted, obs, share, terms, fields, slope, list(predicted.attrs["warnings"]), members)


def forces(model: Any, state: EnergyState, chunks: Chunks = None, device: str = "auto", precision: str = "float64",
           progress: bool = False) -> Forces:
    """−∂F/∂R (eV/Å) of the free energy of ``state``: the LDOS part by one backward pass
    per chunk (Dask tasks on the session's client, else local threads), the core
    correction and Ewald parts from the fields."""
    ds, obs = state.predicted, state.observables
    grid = tuple(ds.attrs["grid_shape"])
    cell = np.array(ds.attrs["cell"])
    voxel = voxel_volume(cell, grid)
    e, mu, t = ds["energy"].values, obs.fermi_energy, obs.temperature
    w0 = energy_weights(e, mu, t, "fermi", 0, obs.scheme)
    grand = (energy_weights(e, mu, t, "fermi", 1, obs.scheme) - mu * w0
             - KB_EV * t * energy_weights(e, mu, t, "entropy", 0, obs.scheme))
    n_atoms = ds.sizes["atom"]
    if state.fields is None:
        g, shift, ionic = np.zeros(grid), 0.0, np.zeros((n_atoms, 3))
    else:
        g_n, g_core = density_gradients(state.fields)
        g = g_n * HARTREE_EV  # eV per electron
        # ∂N/∂μ = ΔV Σ_r ∂n/∂μ(r), since D_k = ΔV Σ_r L(r, k)
        shift = float((g * state.density_slope).sum()) / float(state.density_slope.sum())
        ionic = ion_forces(state.fields, g_core)
    structure = Structure.from_any(ds)
    descriptor = differentiable(model.descriptor_plugin(), device)
    blocks = grid_blocks(grid, tuple(spatial_chunks(dict(zip(SPATIAL_DIMS, grid)), chunks).values()))
    seed = LdosSeed(voxel * grand, voxel * w0, shift)
    kept = ds["descriptors"] if "descriptors" in ds else None
    tasks = [(block_gradient, (model, descriptor, structure, grid, b, seed, g[b], device, precision,
                               None if kept is None else kept[b].values)) for b in blocks]
    client = session_client()
    resources = task_resources(client, {"GPU": 1}) if client is not None and device != "cpu" else None
    parts = run_tasks(tasks, client=client, desc="forces", unit="chunk", progress=progress, resources=resources)
    total = ionic - np.sum(parts, axis=0)
    return Forces(total, total.sum(axis=0))


@dataclass(frozen=True)
class LdosSeed:
    """∂F/∂L(r, k) = a_k + (g(r) − c) b_k (a, b already times ΔV): the seed of a chunk's
    backward pass, from the global quantities."""

    a: np.ndarray
    b: np.ndarray
    c: float

    def at(self, g: np.ndarray) -> np.ndarray:
        return self.a[None, :] + (g.reshape(-1) - self.c)[:, None] * self.b[None, :]


def block_gradient(model: Any, descriptor: Descriptor, structure: Structure, grid: tuple[int, int, int],
                   block: tuple[slice, slice, slice], seed: LdosSeed, g: np.ndarray, device: str,
                   precision: str, features: np.ndarray | None = None) -> np.ndarray:
    """Σ over a block's points of ∂F/∂L · ∂L/∂R (eV/Å, (atoms, 3)): descriptors with their
    pullback (given the block's ``features`` if the energy pass kept them), the network
    forward and backward, the pullback to the atoms' images."""
    dev, dtype = torch_device(device, "forces"), torch_dtype(precision, "forces")
    ldos_of = model.ldos_of_features(dev, dtype)
    n_features = descriptor.n_features(structure)
    grad = np.zeros((len(structure.numbers), 3))
    seeds = seed.at(g)
    known = None if features is None else features.reshape(-1, features.shape[-1])
    for where, points, positions, numbers, atoms in point_batches(descriptor, structure, grid, block,
                                                                  BACKWARD_BATCH_POINTS):
        values, pullback = descriptor.compute_with_pullback(points, positions, numbers, structure,
                                                            None if known is None else known[where])
        x = torch.as_tensor(check_features(descriptor, values, len(points), n_features), dtype=dtype, device=dev)
        x.requires_grad_(True)
        with torch.enable_grad():
            ldos = ldos_of(x)
            (dx,) = torch.autograd.grad(ldos, x, torch.as_tensor(seeds[where], dtype=dtype, device=dev))
        np.add.at(grad, atoms, pullback(dx.cpu().numpy().astype(float)))
    return grad
