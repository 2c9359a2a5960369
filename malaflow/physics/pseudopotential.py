"""Norm-conserving and ultrasoft pseudopotentials in the UPF v2 format: what the total
energy needs from them (valence charge, functional, radial mesh, core-correction density)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError

#: libxc names (as pyscf spells them) of the functionals a UPF header may name
FUNCTIONALS = {"PBE": "PBE,PBE", "LDA": "LDA,PZ", "PZ": "LDA,PZ", "SLA-PZ": "LDA,PZ", "SLA PZ": "LDA,PZ"}
GGA = {"PBE"}


@dataclass
class Pseudopotential:
    """What the total energy needs from a UPF file (lengths in Bohr)."""

    path: Path
    element: str
    z_valence: float
    functional: str
    r: np.ndarray
    rab: np.ndarray
    core_density: np.ndarray | None  # ρ_core(r) in 1/Bohr³, None without core correction

    def core_form_factor(self, g: np.ndarray, volume: float) -> np.ndarray:
        """(4π/V) ∫ r² ρ_core(r) j0(g r) dr for each |G| in ``g`` (1/Bohr), V in Bohr³."""
        if self.core_density is None:
            return np.zeros_like(g)
        r, f = self.r, self.r**2 * self.core_density
        gr = np.outer(g, r)
        j0 = np.where(gr > 1e-12, np.sin(gr) / np.where(gr > 1e-12, gr, 1.0), 1.0)
        return 4.0 * np.pi * simpson(f[None, :] * j0, self.rab) / volume


def simpson(f: np.ndarray, rab: np.ndarray) -> np.ndarray:
    """∫ f dr on a radial mesh with dr/di = rab, Simpson's rule (odd number of points,
    as QE integrates), along the last axis."""
    n = f.shape[-1] - (1 - f.shape[-1] % 2)  # drop the last point of an even mesh
    w = np.zeros(n)
    w[0:n - 1:2] += 1.0
    w[1:n - 1:2] += 4.0
    w[2:n:2] += 1.0
    return (f[..., :n] * rab[:n] * w).sum(axis=-1) / 3.0


def _section(text: str, tag: str, path: Path) -> np.ndarray:
    match = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S)
    if match is None:
        raise InputFileError(path, f"no <{tag}> section; a UPF v2 file is expected")
    try:
        return np.array(match.group(1).split(), dtype=float)
    except ValueError:
        line = text[: match.start()].count("\n") + 1
        raise InputFileError(path, f"<{tag}> holds something other than numbers", line) from None


def read_upf(path: str | Path) -> Pseudopotential:
    """Valence charge, functional, radial mesh and core-correction density of a UPF v2 file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "pseudopotential file not found")
    text = path.read_text(errors="replace")
    header = re.search(r"<PP_HEADER(.*?)/?>", text, re.S)
    if header is None:
        raise InputFileError(path, "no <PP_HEADER>: not a UPF v2 pseudopotential")
    attrs = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', header.group(1)))
    missing = [k for k in ("element", "z_valence", "functional", "core_correction") if k not in attrs]
    if missing:
        line = text[: header.start()].count("\n") + 1
        raise InputFileError(path, f"PP_HEADER lacks {', '.join(missing)}", line)
    r, rab = _section(text, "PP_R", path), _section(text, "PP_RAB", path)
    core = None
    if attrs["core_correction"].strip().lower() in ("true", "t", ".true."):
        core = _section(text, "PP_NLCC", path)
        if core.shape != r.shape:
            raise InputFileError(path, f"PP_NLCC has {len(core)} points, the mesh {len(r)}")
    return Pseudopotential(path, attrs["element"].strip(), float(attrs["z_valence"]),
                           " ".join(attrs["functional"].split()).upper(), r, rab, core)
