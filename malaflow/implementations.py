"""Implementations of one feature set: plugins that compute the same features (their
``features`` class attribute), and choosing among them — the fastest on the device of
the worker computing a block, or one that can differentiate its features for forces."""

from __future__ import annotations

import logging

import numpy as np

from .descriptors import Descriptor, Structure
from .errors import MalaflowError, ParameterError
from .plugins import get_plugin, list_plugins

log = logging.getLogger(__name__)

def implementations(feature_set: str) -> list[type[Descriptor]]:
    """Registered descriptor classes computing ``feature_set``, by name."""
    return [p.cls for p in list_plugins("descriptors") if (p.cls.features or p.cls.name) == feature_set]


def implementation(descriptor: Descriptor, name: str) -> Descriptor:
    """``descriptor``'s features computed by the plugin ``name``, with its parameters."""
    cls = get_plugin("descriptors", name)
    if (cls.features or cls.name) != descriptor.feature_set:
        others = ", ".join(c.name for c in implementations(descriptor.feature_set))
        raise ParameterError(f"descriptor plugin {name!r} computes {cls.features or cls.name!r}, not "
                             f"{descriptor.feature_set!r}; implementations of those: {others}")
    return cls(descriptor.params_dict())


_CHOSEN: dict[tuple[str, str, str], Descriptor] = {}


class FastestHere(Descriptor):
    """A feature set computed block by block by whichever implementation suits the process
    computing the block — chosen there, on the Dask worker: the blockwise implementation
    preferred on its device (``cuda`` when ``device`` allows and torch sees a GPU, else
    ``cpu``), else any blockwise one. :func:`fastest` makes one only where some
    implementation is blockwise."""

    blockwise = True

    def __init__(self, descriptor: Descriptor, device: str = "auto") -> None:
        self.reference, self.device = descriptor, device
        self.name, self.features = f"{descriptor.feature_set}@{device}", descriptor.feature_set
        self.Params, self.params = descriptor.Params, descriptor.params

    def chosen(self) -> Descriptor:
        from .devices import torch_device

        key = (self.features, self.reference.params_hash(), self.device)
        if key not in _CHOSEN:
            kind = torch_device(self.device, "prediction").type
            ranked = sorted((c for c in implementations(self.features) if c.blockwise),
                            key=lambda c: (kind not in c.preferred_on, c.name))
            _CHOSEN[key] = implementation(self.reference, ranked[0].name)
            log.info("descriptors %s on %s: %s", self.features, kind, ranked[0].name)
        return _CHOSEN[key]

    def store_name(self) -> str:
        return self.reference.store_name()

    def n_features(self, structure: Structure) -> int:
        return self.reference.n_features(structure)

    def halo(self) -> float:
        return self.reference.halo()

    def compute(self, points: np.ndarray, positions: np.ndarray, numbers: np.ndarray, structure: Structure) -> np.ndarray:
        return self.chosen().compute(points, positions, numbers, structure)


def fastest(descriptor: Descriptor, device: str = "auto") -> Descriptor:
    """The features of ``descriptor`` computed by the fastest implementation on each
    worker (:class:`FastestHere`), or by ``descriptor`` itself if none is blockwise."""
    if any(c.blockwise for c in implementations(descriptor.feature_set)):
        return FastestHere(descriptor, device)
    return descriptor


def differentiable(descriptor: Descriptor, device: str = "auto") -> Descriptor:
    """``descriptor``'s features from an implementation that gives their derivatives in
    the atomic positions (:meth:`Descriptor.compute_with_pullback`): the one preferred on
    ``device`` (as :class:`FastestHere` ranks them; the compiled kernel on a CPU, torch
    on a GPU), else ``descriptor`` itself if it can, else any that can."""
    from .devices import torch_device

    def can(cls: type[Descriptor]) -> bool:
        return cls.compute_with_pullback is not Descriptor.compute_with_pullback

    kind = torch_device(device, "forces").type
    able = sorted((c for c in implementations(descriptor.feature_set) if can(c)),
                  key=lambda c: (kind not in c.preferred_on, c is not type(descriptor), c.name))
    if not able:
        if can(type(descriptor)):  # not registered (an instance made in-process)
            return descriptor
        names = ", ".join(c.name for c in implementations(descriptor.feature_set)) or descriptor.name
        raise MalaflowError(
            f"forces need the derivatives of the descriptors in the atomic positions; no installed "
            f"implementation of the feature set {descriptor.feature_set!r} ({names}) gives them"
        )
    return descriptor if able[0] is type(descriptor) else implementation(descriptor, able[0].name)
