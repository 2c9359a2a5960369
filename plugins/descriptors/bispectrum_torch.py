"""``bispectrum_torch``: the SNAP bispectrum of LAMMPS's ``compute sna/grid``, in PyTorch.

Same parameters, same features in the same order as ``bispectrum_lammps`` (the feature
set ``bispectrum`` of :mod:`.snap`),
but computed for any block of grid points from the atoms alone — so one snapshot can be
spread over many Dask workers — on CPU or GPU, and differentiable with respect to the
atomic positions.

The formalism (Bartók et al., PRL 104, 136403, 2010; Thompson et al., J. Comput. Phys.
285, 316, 2015), with LAMMPS's conventions: a neighbour at r (from the grid point, r <
r_c = 2·rcutfac·R_elem) is mapped onto the 3-sphere by θ0 = rfac0·π·(r − rmin0)/(r_c −
rmin0); its Cayley–Klein parameters a = (z0 − i z)/r0, b = (y − i x)/r0 with z0 = r/tanθ0,
r0 = √(r² + z0²) generate the Wigner matrices U_j (2j = 0…twojmax) by the recursion of
Varshalovich et al. §4.8.2. The density U_j^tot = δ (the point itself) + Σ_n f_c(r_n)
w_n U_j(n) is contracted with Clebsch–Gordan coefficients:

    B(j1, j2, j) = Re Σ C^{j m}_{j1 m1 j2 m2} C^{j m'}_{j1 m1' j2 m2'}
                        U_j1[m1', m1] U_j2[m2', m2] conj(U_j[m', m])

for j1 ≥ j2, j ≥ j1 (LAMMPS's index order). The sum runs over a precomputed flat list
of non-zero terms (half of the m' rows, by the symmetry of U), so the work per point is
a handful of gathers and products, vectorized over points and neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from malaflow import hookimpl
from malaflow.descriptors import Descriptor, Structure, param
from malaflow.errors import ParameterError
from malaflow.devices import DEVICE_HELP, check_device_name, torch_device
from .snap import (
    BispectrumParams, SnapBispectrum, bispectrum_indices, clebsch_gordan, finish_features, u_offsets,
)

#: neighbour pairs and points handled at once; bounds memory (≈ 1 kB per pair and level)
PAIRS_PER_STEP = 1 << 12
POINTS_PER_STEP = 32


@dataclass
class BispectrumTorchParams(BispectrumParams):
    device: str = param("auto", DEVICE_HELP, hashed=False)
    precision: str = param("float64", "float64 or float32 arithmetic", hashed=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision not in ("float64", "float32"):
            raise ParameterError(f"bispectrum_torch: precision must be float64 or float32, got {self.precision!r}")
        check_device_name(self.device, "bispectrum_torch")


# --------------------------------------------------------------------------- coefficients


@dataclass(frozen=True)
class Contraction:
    """Index lists for B(j1, j2, j) = Re Σ_m',m conj(U_j[m', m]) · Z(j1, j2, j)[m', m]
    with Z[m', m] = Σ C C U_j1[m1', m1] U_j2[m2', m2] (flat indices into all U_j).

    Rows m' of U_j beyond the middle mirror those before it, so only rows 2m' ≤ j
    enter, with weight 2 (1 for the middle row of even j), folded into ``coeff``.
    """

    i1: np.ndarray  # per product term: U_j1 entry
    i2: np.ndarray  # U_j2 entry
    coeff: np.ndarray  # weight · C(m1, m2 → m) · C(m1', m2' → m')
    z: np.ndarray  # which Z entry it adds to
    z_u: np.ndarray  # per Z entry: the U_j entry it pairs with
    z_feature: np.ndarray  # and the feature it adds to


@cache
def contraction(twojmax: int) -> Contraction:
    off = u_offsets(twojmax)
    terms, z_entries = [], []
    for feature, (j1, j2, j) in enumerate(bispectrum_indices(twojmax)):
        s = (j1 + j2 - j) // 2
        cg = {
            (m1, m2): clebsch_gordan(j1, 2 * m1 - j1, j2, 2 * m2 - j2, j, 2 * (m1 + m2 - s) - j)
            for m1 in range(j1 + 1)
            for m2 in range(j2 + 1)
            if 0 <= m1 + m2 - s <= j
        }
        first_z = len(z_entries)
        z_entries += [(off[j] + mb * (j + 1) + ma, feature) for mb in range(j // 2 + 1) for ma in range(j + 1)]
        for (mb1, mb2), cb in cg.items():
            mb = mb1 + mb2 - s
            if 2 * mb > j or cb == 0.0:
                continue
            weight = 2.0 if 2 * mb < j else 1.0
            for (ma1, ma2), ca in cg.items():
                if ca != 0.0:
                    terms.append((
                        off[j1] + mb1 * (j1 + 1) + ma1,
                        off[j2] + mb2 * (j2 + 1) + ma2,
                        weight * cb * ca,
                        first_z + mb * (j + 1) + (ma1 + ma2 - s),
                    ))
    i1, i2, coeff, z = (np.array(c) for c in zip(*terms))
    z_u, z_feature = (np.array(c) for c in zip(*z_entries))
    return Contraction(i1, i2, coeff.astype(float), z, z_u, z_feature)


# --------------------------------------------------------------------------- arithmetic
#
# Complex numbers are kept as a trailing axis (re, im) of real tensors, and every torch
# call does one IEEE operation per element. Vectorized and scalar code paths (and
# thread splits) then round identically, so a point's features do not depend on which
# chunk or batch it is computed in. Complex kernels and libm/Sleef sin, cos, tan do not
# give that guarantee, hence the own sine and cosine below.


def _swap(z: torch.Tensor) -> torch.Tensor:
    """(im, −re): with it, conj(c)·z = Re c · z + Im c · swap(z) and c·z = Re c · z − Im c · swap(z)."""
    return torch.stack([z[..., 1], -z[..., 0]], dim=-1)


def _conj(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([z[..., 0], -z[..., 1]], dim=-1)


def _horner(coefficients: list[float], x: torch.Tensor) -> torch.Tensor:
    result = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = result * x
        result = result + c
    return result


_SIN = [(-1) ** k / math.factorial(2 * k + 1) for k in range(12)]  # sin h / h in powers of h²
_COS = [(-1) ** k / math.factorial(2 * k) for k in range(13)]


def cos_sin(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos x and sin x for 0 ≤ x ≤ π, by Taylor series of x/2 (truncation < 1e-17)
    and the double-angle formulas: reproducible to the last bit on any hardware path,
    and sin keeps full relative precision for small x."""
    h = x * 0.5
    h2 = h * h
    sin_h = _horner(_SIN, h2) * h
    cos_h = _horner(_COS, h2)
    return 1.0 - 2.0 * (sin_h * sin_h), 2.0 * (sin_h * cos_h)


def _complex_product(f: torch.Tensor, g: torch.Tensor, out: torch.Tensor | None = None,
                     tmp: torch.Tensor | None = None) -> torch.Tensor:
    """f·g for complex numbers stored as (re, im) on axis 1; into ``out`` (using ``tmp``)
    when given, else as a new tensor — the same operations in the same order either way."""
    if out is None:
        return torch.stack([f[:, 0] * g[:, 0] - f[:, 1] * g[:, 1], f[:, 0] * g[:, 1] + f[:, 1] * g[:, 0]], dim=1)
    torch.mul(f[:, 0], g[:, 0], out=out[:, 0])
    out[:, 0].sub_(torch.mul(f[:, 1], g[:, 1], out=tmp))
    torch.mul(f[:, 0], g[:, 1], out=out[:, 1])
    out[:, 1].add_(torch.mul(f[:, 1], g[:, 0], out=tmp))
    return out


def mirror_rows(u: torch.Tensor, j: int, rows: range) -> torch.Tensor:
    """Rows ``rows`` of U_j (n, ·, j+1, 2) from the rows j − m' they mirror:
    U_j[m', m] = (−1)^(m + m') conj(U_j[j − m', j − m])."""
    row = torch.tensor(list(rows), dtype=torch.long, device=u.device)
    m = torch.arange(j + 1, device=u.device)
    sign = (1 - 2 * ((row[:, None] + m[None, :]) % 2)).to(u.dtype)[..., None]
    return sign * torch.flip(_conj(u[:, j - row, :, :]), dims=(2,))


# --------------------------------------------------------------------------- U matrices


def wigner_v_half(a: torch.Tensor, b: torch.Tensor, twojmax: int) -> list[torch.Tensor]:
    """Rows 2m' ≤ j of the rescaled Wigner matrices V_j (n, j//2 + 1, j+1, 2), j = 0…twojmax,
    from Cayley–Klein parameters a, b (n, 2).

    The recursion of VMK §4.8.2,
        U_j[m', m] = √((j−m)/(j−m'))·a*·U_{j−1}[m', m] − √(m/(j−m'))·b*·U_{j−1}[m', m−1],
    loses its square roots for V_j = U_j / D_j with D_j[m', m] = √((j−m)! m! / ((j−m')! m'!)):
        V_j[m', m] = a*·V_{j−1}[m', m] − b*·V_{j−1}[m', m−1]
    — two products per entry. V has U's mirror symmetry (D is symmetric under it), and
    D is applied once per grid point after the sum over neighbours (:func:`u_scale`).
    For even j the recursion needs one row of V_{j−1} past its half, mirrored here.
    """
    n, dev, dt = a.shape[0], a.device, a.dtype
    ar, ai = a[:, 0, None, None, None], a[:, 1, None, None, None]
    br, bi = b[:, 0, None, None, None], b[:, 1, None, None, None]
    levels = [torch.stack([torch.ones((n, 1, 1), dtype=dt, device=dev), torch.zeros((n, 1, 1), dtype=dt, device=dev)], -1)]
    prev = levels[0]
    for j in range(1, twojmax + 1):
        rows = j // 2 + 1
        p = prev[:, :rows]
        ps = _swap(p)
        v = torch.zeros((n, rows, j + 1, 2), dtype=dt, device=dev)
        v[:, :, :j] = ar * p + ai * ps  # conj(a)·V_{j-1}
        v[:, :, 1:] = v[:, :, 1:] - (br * p + bi * ps)  # − conj(b)·V_{j-1}, shifted
        levels.append(v)
        prev = torch.cat([v, mirror_rows(v, j, range(rows, rows + 1))], dim=1) if j % 2 else v
    return levels


def u_scale(j: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """D_j[m', m] = √((j−m)! m! / ((j−m')! m'!)) for rows 2m' ≤ j: U_j = D_j ⊙ V_j."""
    f = [math.factorial(k) for k in range(j + 1)]
    d = [[math.sqrt(f[j - m] * f[m] / (f[j - mp] * f[mp])) for m in range(j + 1)] for mp in range(j // 2 + 1)]
    return torch.tensor(d, dtype=dtype, device=device)[..., None]


# --------------------------------------------------------------------------- features


def _neighbour_pairs(points: torch.Tensor, positions: torch.Tensor, cut: torch.Tensor):
    """(point, atom) index pairs with 0 < r < r_c of the atom, as LAMMPS selects them."""
    with torch.no_grad():
        d = points[:, None, :] - positions[None, :, :]
        d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        return torch.nonzero((d2 < (cut * cut)[None, :]) & (d2 > 1e-20), as_tuple=True)


def u_total(points: torch.Tensor, positions: torch.Tensor, radius: torch.Tensor, weight: torch.Tensor,
            params: BispectrumParams) -> torch.Tensor:
    """U_j^tot of every point, all j, flattened (n_points, Σ (j+1)², 2): the point itself
    (δ, LAMMPS's wself = 1) plus each neighbour's U_j, weighted and switched off smoothly."""
    p = params
    n_points, dt, device = points.shape[0], points.dtype, points.device
    cut = 2.0 * p.rcutfac * radius  # LAMMPS: r_c = 2·rcutfac·R of the neighbour's element
    half = [torch.zeros((n_points, (j // 2 + 1) * (j + 1) * 2), dtype=dt, device=device) for j in range(p.twojmax + 1)]
    pi, ni = _neighbour_pairs(points, positions, cut)
    in_place = not (torch.is_grad_enabled() and (points.requires_grad or positions.requires_grad))
    for start in range(0, len(pi), PAIRS_PER_STEP):
        ip, jn = pi[start : start + PAIRS_PER_STEP], ni[start : start + PAIRS_PER_STEP]
        rij = points[ip] - positions[jn]
        x, y, z = rij[:, 0], rij[:, 1], rij[:, 2]
        r = torch.sqrt(x * x + y * y + z * z)
        span = cut[jn] - p.rmin0
        cos0, sin0 = cos_sin((r - p.rmin0) * p.rfac0 * math.pi / span)
        z0 = r * cos0 / sin0  # r / tan θ0
        r0inv = 1.0 / torch.sqrt(r * r + z0 * z0)
        a = torch.stack([z0 * r0inv, -z * r0inv], dim=-1)
        b = torch.stack([y * r0inv, -x * r0inv], dim=-1)
        if p.switchflag:
            cos_c, _ = cos_sin(torch.clamp(r - p.rmin0, min=0.0) * math.pi / span)
            fc = 0.5 * (cos_c + 1.0)
        else:
            fc = torch.ones_like(r)
        scale = (fc * weight[jn])[:, None]
        for j, v in enumerate(wigner_v_half(a, b, p.twojmax)):
            if in_place:
                half[j].index_add_(0, ip, v.reshape(len(r), -1).mul_(scale))
            else:
                half[j] = half[j].index_add(0, ip, scale * v.reshape(len(r), -1))
    full = []
    for j, h in enumerate(half):
        eye = torch.stack([torch.eye(j + 1, dtype=dt, device=device)[: j // 2 + 1],
                           torch.zeros((j // 2 + 1, j + 1), dtype=dt, device=device)], dim=-1)
        h = h.reshape(n_points, j // 2 + 1, j + 1, 2) * u_scale(j, dt, device) + eye
        full.append(torch.cat([h, mirror_rows(h, j, range(j // 2 + 1, j + 1))], dim=1).reshape(n_points, -1, 2))
    return torch.cat(full, dim=1)


def _index_tensors(twojmax: int, real: torch.dtype, device: torch.device):
    c = contraction(twojmax)
    i1, i2, z, z_u, z_feature = (torch.as_tensor(x, device=device) for x in (c.i1, c.i2, c.z, c.z_u, c.z_feature))
    return i1, i2, z, z_u, z_feature, torch.as_tensor(c.coeff, dtype=real, device=device)[:, None, None]


def contract(u_tot: torch.Tensor, twojmax: int) -> torch.Tensor:
    """Raw bispectrum components (n_points, n_features) from U_j^tot (:func:`u_total`).

    Points last: gathers and sums then run over whole rows (index_select / index_add on
    dim 0). Without autograd the work arrays are allocated once and reused: fresh ones
    of tens of MB per step fragment the C heap until the process holds GBs."""
    real, device, n_points = u_tot.dtype, u_tot.device, u_tot.shape[0]
    i1, i2, z, z_u, z_feature, coeff = _index_tensors(twojmax, real, device)
    n_b = len(bispectrum_indices(twojmax))
    u_t = u_tot.permute(1, 2, 0)  # (entry, re/im, point)
    step = min(POINTS_PER_STEP, max(n_points, 1))
    reuse = not (torch.is_grad_enabled() and u_tot.requires_grad)
    shapes = {"f": (len(i1), 2, step), "g": (len(i1), 2, step), "fg": (len(i1), 2, step),
              "t": (len(i1), step), "z": (len(z_u), 2, step), "uz": (len(z_u), 2, step)}
    work = {k: torch.empty(v, dtype=real, device=device) for k, v in shapes.items()} if reuse else {}
    buf = lambda name, n: work[name][..., :n] if reuse else None  # noqa: E731
    blocks = []
    for start in range(0, n_points, step):
        u = u_t[:, :, start : start + step].contiguous()
        n = u.shape[2]
        f = torch.index_select(u, 0, i1, out=buf("f", n))
        g = torch.index_select(u, 0, i2, out=buf("g", n))
        product = _complex_product(f, g, buf("fg", n), buf("t", n))  # U_j1 · U_j2
        if reuse:
            zlist = work["z"][..., :n].zero_().index_add_(0, z, product.mul_(coeff))
            uz = torch.index_select(u, 0, z_u, out=buf("uz", n)).mul_(zlist)
        else:
            zlist = torch.zeros((len(z_u), 2, n), dtype=real, device=device).index_add(0, z, product * coeff)
            uz = u[z_u] * zlist
        terms = uz[:, 0] + uz[:, 1]  # Re(conj(U_j) · Z)
        blocks.append(torch.zeros((n_b, n), dtype=real, device=device).index_add(0, z_feature, terms).T)
    return torch.cat(blocks) if blocks else torch.zeros((0, n_b), dtype=real, device=device)


def contract_adjoint(u_tot: torch.Tensor, grad_b: torch.Tensor, twojmax: int) -> torch.Tensor:
    """∂E/∂U_j^tot (n_points, entries, 2) of E = Σ grad_b · B for the raw components B of
    :func:`contract` — its vector–Jacobian product written out (LAMMPS's adjoint "Y"
    idea), so that no autograd graph of the contraction is kept. With Z = Σ c U_j1·U_j2
    and B = Re(conj(U_j)·Z) per term: Ū_j += ḡ Z, Z̄ = ḡ U_j, and for each product
    P = f·g added to Z with weight c: f̄ = c (Z̄ ∘ conj-rotated g), ḡ likewise."""
    real, device, n_points = u_tot.dtype, u_tot.device, u_tot.shape[0]
    i1, i2, z, z_u, z_feature, coeff = _index_tensors(twojmax, real, device)
    u_t = u_tot.detach().permute(1, 2, 0)
    g_t = grad_b.T.to(real)  # (feature, point)
    out = torch.zeros((u_t.shape[0], 2, n_points), dtype=real, device=device)
    for start in range(0, n_points, POINTS_PER_STEP):
        u = u_t[:, :, start : start + POINTS_PER_STEP].contiguous()
        n = u.shape[2]
        f, g = u[i1], u[i2]
        zlist = torch.zeros((len(z_u), 2, n), dtype=real, device=device).index_add(0, z, _complex_product(f, g) * coeff)
        gz = g_t[z_feature, start : start + n][:, None, :]  # each Z entry's feature weight
        bar = torch.zeros((u_t.shape[0], 2, n), dtype=real, device=device).index_add(0, z_u, gz * zlist)
        zbar = (gz * u[z_u])[z] * coeff  # (term, re/im, point)
        f_bar = torch.stack([zbar[:, 0] * g[:, 0] + zbar[:, 1] * g[:, 1], zbar[:, 1] * g[:, 0] - zbar[:, 0] * g[:, 1]], 1)
        g_bar = torch.stack([zbar[:, 0] * f[:, 0] + zbar[:, 1] * f[:, 1], zbar[:, 1] * f[:, 0] - zbar[:, 0] * f[:, 1]], 1)
        bar.index_add_(0, i1, f_bar).index_add_(0, i2, g_bar)
        out[:, :, start : start + n] = bar
    return out.permute(2, 0, 1)


def bispectrum_features(
    points: torch.Tensor,
    positions: torch.Tensor,
    radius: torch.Tensor,
    weight: torch.Tensor,
    params: BispectrumParams,
) -> torch.Tensor:
    """Bispectrum components (n_points, n_features) at ``points`` from atoms at
    ``positions`` (periodic images included) with per-atom element radius and weight.

    Differentiable in ``positions`` and ``points`` (autograd).
    """
    return finish_features(contract(u_total(points, positions, radius, weight, params), params.twojmax), params)


class BispectrumTorchDescriptor(SnapBispectrum):
    """SNAP bispectrum at any block of grid points, in PyTorch (CPU/GPU, differentiable)."""

    name = "bispectrum_torch"
    Params = BispectrumTorchParams
    blockwise = True
    resources = {"GPU": 1}
    preferred_on = ("cuda",)

    def device(self) -> torch.device:
        return torch_device(self.params.device, self.name)

    def _tensors(self, points, positions, numbers, structure: Structure) -> tuple[torch.Tensor, ...]:
        """Points, positions, and per-atom radius and weight, as tensors on the device."""
        order = structure.element_order(self.params.elements, self.name)
        radii = dict(zip(order, self.per_element("radelem", order)))
        weights = dict(zip(order, self.per_element("wj", order)))
        real = torch.float64 if self.params.precision == "float64" else torch.float32
        device = self.device()
        as_tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=float), dtype=real, device=device)  # noqa: E731
        return (as_tensor(points), as_tensor(positions), as_tensor([radii[z] for z in numbers]),
                as_tensor([weights[z] for z in numbers]))

    def compute(self, points, positions, numbers, structure: Structure):
        with torch.no_grad():
            features = bispectrum_features(*self._tensors(points, positions, numbers, structure), self.params)
        return features.cpu().numpy().astype(float)

    def compute_with_pullback(self, points, positions, numbers, structure: Structure, features=None):
        """Features and their vector–Jacobian product (``features`` given are not used:
        autograd needs its own forward pass): reverse-mode autograd through the
        neighbours' Wigner matrices and LAMMPS's options, the contraction's adjoint
        written out (:func:`contract_adjoint`) — autograd through the contraction would
        keep GBs of intermediate products for a few hundred points."""
        points, positions, radius, weight = self._tensors(points, positions, numbers, structure)
        positions.requires_grad_(True)
        with torch.enable_grad():
            u_tot = u_total(points, positions, radius, weight, self.params)
        with torch.no_grad():
            raw = contract(u_tot, self.params.twojmax)
        raw.requires_grad_(True)
        with torch.enable_grad():
            features = finish_features(raw, self.params)

        def pullback(grad_features: np.ndarray) -> np.ndarray:
            seed = torch.as_tensor(np.asarray(grad_features), dtype=features.dtype, device=features.device)
            (grad_raw,) = torch.autograd.grad(features, raw, seed)
            (grad,) = torch.autograd.grad(u_tot, positions, contract_adjoint(u_tot, grad_raw, self.params.twojmax))
            return grad.cpu().numpy().astype(float)

        return features.detach().cpu().numpy().astype(float), pullback

    compute_grid = Descriptor.compute_grid  # block by block, not LAMMPS


@hookimpl
def malaflow_descriptors():
    return [BispectrumTorchDescriptor]
