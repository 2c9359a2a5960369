"""The whole malaflow plugin contract.

A plugin is a module (or object) with one or more of the hook implementations below,
registered through the entry-point group ``malaflow``. Each hook returns a list of
*classes*; malaflow instantiates them when they are used.

Contract of the classes each hook returns (all have a class attribute ``name``):

descriptors
    subclasses of :class:`malaflow.Descriptor`: ``Params`` (a dataclass with the
    parameters and their defaults), ``n_features(structure)``, ``halo() -> float``
    (Å of atoms around a point that influence it) and
    ``compute(points, positions, numbers, structure) -> ndarray`` giving
    (n_points, n_features) for any batch of points, the atoms' periodic images
    already found — or ``blockwise = False`` and ``compute_grid`` for codes that
    only do whole grids. See docs/plugins.md.
targets
    subclasses of :class:`malaflow.Target`: ``variable`` (the dataset variable holding
    the target, which a model trained on it predicts), ``dos(ds)`` (the DOS D(ε) in 1/eV)
    and, for targets on the grid, ``density(ds, fermi_energy, scheme)``; the observables
    (Fermi level at fixed electron count, band energy, −TS) come from the base class.
models
    subclasses of :class:`malaflow.models.Model`: ``Params`` and
    ``build(n_inputs, n_outputs) -> torch.nn.Module``.
readers
    subclasses of :class:`malaflow.Reader`: ``can_read(path) -> bool`` and
    ``read(path, **options) -> malaflow.Snapshot``.

The registry (:mod:`malaflow.plugins`) checks every class against this contract when
plugins load and skips, with a warning saying what is missing, one that breaks it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("malaflow")
hookimpl = pluggy.HookimplMarker("malaflow")


@hookspec
def malaflow_descriptors() -> list[type]:
    """Descriptor classes: local atomic environment → features at grid points."""


@hookspec
def malaflow_targets() -> list[type]:
    """Target classes: learned quantities on the grid (LDOS) and their observables."""


@hookspec
def malaflow_models() -> list[type]:
    """Model classes: neural networks mapping descriptors to targets."""


@hookspec
def malaflow_readers() -> list[type]:
    """Reader classes: files from a DFT code → :class:`malaflow.Snapshot`."""
