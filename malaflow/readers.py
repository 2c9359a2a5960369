"""Reader plugins' shared base: dispatch by file, checked file access, text parsing.

A reader turns the files of one DFT calculation into a :class:`malaflow.Snapshot`.
Readers are plugins (hook ``malaflow_readers``); :func:`read_snapshot` picks the one
that recognises a path, or the one named.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputFileError, PluginError
from .plugins import get_plugin, list_plugins
from .snapshot import Snapshot


#: a Fortran-style real number in text output (also 1.0D-3)
FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?"


class Reader:
    """Base class of reader plugins: override ``name``, ``can_read`` and ``read``."""

    name: str = ""
    description: str = ""

    def can_read(self, path: Path) -> bool:
        raise NotImplementedError

    def read(self, path: Path, **options: Any) -> Snapshot:
        raise NotImplementedError


def read_snapshot(path: str | Path, reader: str | None = None, **options: Any) -> Snapshot:
    """Read one snapshot with the named reader, or the first that recognises ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file or directory")
    if reader is not None:
        return get_plugin("readers", reader)().read(path, **options)
    for info in list_plugins("readers"):
        candidate = info.cls()
        if candidate.can_read(path):
            return candidate.read(path, **options)
    names = ", ".join(p.name for p in list_plugins("readers"))
    raise PluginError(f"{path}: none of the installed readers ({names}) recognises this; name one")


# --------------------------------------------------------------------------- files


def glob_files(spec: Any, base: Path, pattern: str) -> list[Path]:
    """A list of files from a directory (with ``pattern``), a glob, or a list of paths."""
    if isinstance(spec, (list, tuple)):
        return [Path(s) for s in spec]
    spec = Path(spec)
    if not spec.is_absolute():
        spec = base / spec
    if spec.is_dir():
        return sorted(spec.glob(pattern))
    if any(c in str(spec) for c in "*?["):
        return sorted(spec.parent.glob(spec.name))
    return [spec]


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"missing: expected {what} here")
    return path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_provenance(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Absolute paths and SHA-256 checksums of the raw files a snapshot came from."""
    return {"files": {str(Path(p).resolve()): sha256(p) for p in paths}}


def ldos_kernel(pp_input: str | None, smearing: str) -> str | None:
    """The function pp.x broadened an LDOS with (``degauss_ldos`` its width): a Gaussian when
    its input sets ``use_gauss_ldos``, otherwise the smearing of the pw.x run (Fermi–Dirac:
    −∂f/∂ε, whose slow tails fill gaps); None for one :func:`eigenvalue_dos` does not know
    (Marzari–Vanderbilt, Methfessel–Paxton)."""
    if pp_input and re.search(r"use_gauss_ldos\s*=\s*\.true\.", pp_input, re.IGNORECASE):
        return "gaussian"
    smearing = smearing.lower()
    return next((kernel for kernel in ("fermi-dirac", "gaussian") if kernel in smearing), None)


def check_finite(path: str | Path, array: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputFileError(
            path, f"{what} has {int(bad.sum())} NaN/inf values (first at index {first})"
        )


def head(path: Path, n_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(n_bytes).decode("utf-8", "replace")
    except OSError:
        return ""


class TextFile:
    """The lines of a text output file, with regex search that reports line numbers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.lines = self.path.read_text(errors="replace").splitlines()
        except OSError as exc:
            raise InputFileError(self.path, f"cannot be read: {exc}") from exc

    def find_all(self, pattern: str, start: int = 0) -> list[tuple[int, re.Match]]:
        regex = re.compile(pattern)
        return [
            (i, m) for i in range(start, len(self.lines)) if (m := regex.search(self.lines[i]))
        ]

    def find(
        self, pattern: str, what: str, last: bool = False, required: bool = True, start: int = 0
    ) -> tuple[int, re.Match] | None:
        """First (or last) match of ``pattern``; a clear error if required and absent."""
        hits = self.find_all(pattern, start)
        if not hits:
            if required:
                raise self.error(f"no {what} found (truncated or not the expected output?)")
            return None
        return hits[-1] if last else hits[0]

    def error(self, message: str, index: int | None = None) -> InputFileError:
        """An error at 0-based line ``index`` (or the whole file)."""
        return InputFileError(self.path, message, None if index is None else index + 1)

    def floats(self, index: int, text: str, count: int | None = None) -> list[float]:
        """Parse the floats in ``text`` (from line ``index``), Fortran exponents allowed."""
        try:
            values = [float(t.replace("D", "E").replace("d", "e")) for t in text.split()]
        except ValueError:
            raise self.error(f"expected numbers, got {text.strip()!r}", index) from None
        if count is not None and len(values) != count:
            raise self.error(f"expected {count} numbers, got {len(values)}: {text.strip()!r}", index)
        return values
