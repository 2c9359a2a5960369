"""Model plugins: the neural network that maps descriptors to the target (LDOS) per point.

A model plugin is a :class:`Model` subclass with a ``Params`` dataclass and a ``build``
method; malaflow passes it the input and output sizes it finds in the data, so another
architecture is one new file registered through the ``malaflow_models`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .params import Configurable
from .plugins import get_plugin


class Model(Configurable):
    """Base class of model plugins: ``build(n_inputs, n_outputs) -> torch.nn.Module``."""

    kind = "model"

    def build(self, n_inputs: int, n_outputs: int):
        raise NotImplementedError


def get_model(plugin: str, params: Mapping[str, Any] | None = None) -> Model:
    """A model plugin instance by registered name."""
    return get_plugin("models", plugin)(params)  # the registry admits Model subclasses only
