"""Exceptions raised by malaflow.

Every error a user can trigger with bad input is a :class:`MalaflowError`, with a
message that says which file (and line, where there is one) and what was expected,
so that a physicist can fix the input without reading our source.
"""

from __future__ import annotations

from pathlib import Path


class MalaflowError(Exception):
    """Base class of all errors malaflow raises on purpose."""


class InputFileError(MalaflowError):
    """A file given to malaflow is missing, truncated or not what it claims to be."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


class PluginError(MalaflowError):
    """A plugin is unknown, failed to load, or broke the plugin contract."""


class StoreError(MalaflowError):
    """A Zarr snapshot store is missing, incomplete or not a malaflow snapshot."""


class CatalogError(MalaflowError):
    """catalog.yaml is malformed, or a query or record refers to something absent."""


class ParameterError(MalaflowError, ValueError):
    """A physical or numerical parameter is outside what makes sense."""


class ElectronCountError(ParameterError):
    """A DOS cannot hold the electrons of the cell on its energy grid: no Fermi level exists.
    Its own class because far from its training data a model may predict such a DOS, and
    callers that can go on without that one prediction (an ensemble's spread, a learning
    loop) catch this, not every ParameterError."""
