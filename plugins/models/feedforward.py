"""``feedforward``: a fully connected network, descriptors → LDOS at one grid point
(MALA's architecture: e.g. 91 → 100 → 11 with ReLU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from malaflow import hookimpl
from malaflow.errors import ParameterError
from malaflow.models import Model
from malaflow.params import param

ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
}


@dataclass
class FeedForwardParams:
    layers: list[int] = param([100], "widths of the hidden layers")
    activation: str = param("relu", "activation after each hidden layer: " + ", ".join(ACTIVATIONS))
    dropout: float = param(0.0, "dropout probability after each hidden layer")

    def __post_init__(self) -> None:
        if any(w < 1 for w in self.layers):
            raise ParameterError(f"feedforward: layer widths must be ≥ 1, got {self.layers}")
        if self.activation not in ACTIVATIONS:
            raise ParameterError(f"feedforward: unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"feedforward: dropout must be in [0, 1), got {self.dropout}")


class FeedForward(Model):
    """Fully connected layers with an activation (and optional dropout) between them."""

    name = "feedforward"
    Params = FeedForwardParams

    def build(self, n_inputs: int, n_outputs: int) -> torch.nn.Module:
        widths = [n_inputs, *self.params.layers]
        layers: list[torch.nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [torch.nn.Linear(a, b), ACTIVATIONS[self.params.activation]()]
            if self.params.dropout:
                layers.append(torch.nn.Dropout(self.params.dropout))
        layers.append(torch.nn.Linear(widths[-1], n_outputs))
        return torch.nn.Sequential(*layers)


@hookimpl
def malaflow_models():
    return [FeedForward]
