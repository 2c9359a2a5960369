"""The ``malaflow`` command line: the commands live in :mod:`.data` and :mod:`.learning`,
registered on the one Typer app of :mod:`.common` when this package is imported."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import typer

from ..errors import MalaflowError
from . import data, learning  # noqa: F401 (registers the commands)
from .common import app

__all__ = ["app", "main"]


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _one_line_warning  # a physicist at a shell reads sentences, not source lines
    try:
        app()
    except MalaflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
