"""Whether a prediction can be trusted: the checks a model makes on the structures and
grids it is asked about, and the share of grid points where it extrapolates.

A network maps descriptors to an LDOS wherever it is evaluated; it cannot say it is
outside what it learned. These checks can: atoms much closer than any pair the model
was trained on, a grid much coarser than the training grid (the LDOS is point-wise, the
integrals over it degrade), descriptors outside the training range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask
import numpy as np
import xarray as xr

from .observables import observables, target_of

#: an atom pair closer than this fraction of the shortest training distance is flagged.
#: Why not lower: the repulsion between atoms steepens fast below the distances a model was
#: trained on, and a model has no wall there — an NVE run of 16 Be atoms (benchmarks/RESULTS.md,
#: "Energy conservation") passed 1.6 Å with the closest training pair at 1.635 Å and collapsed to
#: 0.95 Å; at 0.5 nothing was said before 0.82 Å.
CLOSE_FRACTION = 0.85
#: a grid step longer than this multiple of the training grid step is flagged
COARSE_FACTOR = 2.0


def shortest_distance(positions: Any, cell: Any, pbc: Any = (True, True, True)) -> float:
    """The shortest interatomic distance (Å) with periodic images; inf for one atom alone."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    atoms = Atoms(positions=np.asarray(positions), cell=np.asarray(cell), pbc=pbc)
    for cutoff in (4.0, 8.0, 16.0):
        d = neighbor_list("d", atoms, cutoff)
        if len(d):
            return float(d.min())
    return float("inf")


def structure_warnings(model: Any, positions: Any, cell: Any, grid: tuple[int, int, int]) -> list[str]:
    """What makes a prediction of this structure on this grid doubtful, in words."""
    found = []
    trained = model.metadata.get("min_distance")
    if trained:
        shortest = shortest_distance(positions, cell)
        if shortest < CLOSE_FRACTION * trained:
            found.append(f"atoms {shortest:.3f} Å apart, where the closest pair in the training data was "
                         f"{trained:.3f} Å: the model has not seen atoms this close and cannot know how "
                         "strongly they repel; energies and forces here are guesses")
    steps = np.linalg.norm(np.asarray(cell, dtype=float), axis=1) / np.asarray(grid)
    coarse = [f"{'abc'[i]}: {s:.3f} Å vs {t:.3f} Å" for i, (s, t) in enumerate(zip(steps, model.grid_spacing))
              if s > COARSE_FACTOR * t]
    if coarse:
        found.append(f"grid steps far coarser than the training grid's ({'; '.join(coarse)}): "
                     "integrals over the LDOS lose accuracy; use the default grid or a finer one")
    return found


def observables_with_trust(predicted: xr.Dataset, scheme: str = "analytic",
                           also: Mapping[str, Any] | None = None) -> tuple[Any, float, dict[str, Any]]:
    """The observables of a prediction, the share of its grid points where the model
    extrapolates, and the lazy reductions ``also`` ({name: dask-backed array}, e.g. an
    ensemble's members' DOS) computed — all from one pass over the descriptor chunks."""
    also = dict(also or {})
    if "extrapolated" not in predicted:
        extra = dict(zip(also, dask.compute(*also.values())))
        return observables(predicted, scheme=scheme), float("nan"), extra
    lazy_dos = target_of(predicted).dos(predicted)
    dos, share, *extra = dask.compute(lazy_dos, predicted["extrapolated"].mean(), *also.values())
    ds = xr.Dataset({"dos": dos}, attrs={k: predicted.attrs[k] for k in ("temperature", "n_electrons")})
    return observables(ds, target="dos", scheme=scheme), float(share), dict(zip(also, extra))
