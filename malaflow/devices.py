"""Which torch device a piece of work runs on: CUDA when asked for ("auto" and a GPU is
there, or "cuda[:N]"), else the CPU — one rule for training, prediction and descriptors."""

from __future__ import annotations

import torch

from .errors import ParameterError

DEVICE_HELP = "torch device: auto (CUDA if present), cpu, cuda or cuda:N"


def check_device_name(name: str, who: str) -> str:
    """``name`` if it names a device kind malaflow uses, else a ParameterError naming ``who``."""
    if not isinstance(name, str) or not (name in ("auto", "cpu") or name.startswith("cuda")):
        raise ParameterError(f"{who}: device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def torch_device(name: str, who: str) -> torch.device:
    """The device ``name`` stands for here; asking for CUDA where torch sees none is an error."""
    check_device_name(name, who)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"{who}: device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(precision: str, who: str) -> torch.dtype:
    """The torch dtype of a precision name (float32, float64)."""
    if precision not in PRECISIONS:
        raise ParameterError(f"{who}: precision must be float32 or float64, got {precision!r}")
    return PRECISIONS[precision]
