"""VASP reader: POSCAR/CONTCAR, OUTCAR, CHGCAR and PARCHG files.

Atoms come from CONTCAR (or POSCAR) through ASE; the Fermi level, electron count,
smearing and energies from OUTCAR (the last ionic step); the density from CHGCAR,
which stores ρ·V_cell and which ASE divides by the cell volume, giving 1/Å³.

VASP has no LDOS on an energy grid as pp.x does; the nearest thing is a stack of
PARCHG files, each the charge of the states in an energy window [ε − w/2, ε + w/2]
(LPARD with EINT). Given their centre energies ε and the window width w, the LDOS
is PARCHG/w in 1/(eV·Å³).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from malaflow import Snapshot, hookimpl
from malaflow.errors import InputFileError
from malaflow.readers import FLOAT, Reader, TextFile, check_finite, file_provenance, glob_files
from malaflow.units import KB_EV
from malaflow.xarray_backend import backend_for


_OUTCAR_ENERGIES = {
    "total_energy": rf"free\s+energy\s+TOTEN\s+=\s+({FLOAT})\s+eV",
    "internal_energy": rf"energy\s+without entropy=\s+({FLOAT})",
    "entropy_contribution": rf"entropy T\*S\s+EENTRO\s+=\s+({FLOAT})",
    "band_energy": rf"eigenvalues\s+EBANDS\s+=\s+({FLOAT})",
    "ewald_contribution": rf"Ewald energy\s+TEWEN\s+=\s+({FLOAT})",
}


def parse_outcar(path: str | Path) -> dict[str, Any]:
    """Electron count, smearing, Fermi level and energies (eV) from an OUTCAR."""
    out = TextFile(path)
    if out.find(r"General timing and accounting", "", required=False) is None:
        raise out.error(
            f"truncated: no 'General timing and accounting' after {len(out.lines)} lines; "
            "VASP did not finish"
        )
    res: dict[str, Any] = {}
    i, m = out.find(rf"NELECT\s*=\s*({FLOAT})", "NELECT")
    res["n_electrons"] = float(m.group(1))
    i, m = out.find(rf"ISMEAR\s*=\s*(-?\d+);\s*SIGMA\s*=\s*({FLOAT})", "ISMEAR/SIGMA")
    res["ismear"], res["sigma"] = int(m.group(1)), float(m.group(2))
    i, m = out.find(rf"E-fermi\s*:\s*({FLOAT})", "E-fermi", last=True)
    res["fermi_energy"] = float(m.group(1))
    res["energies_ev"] = {}
    for name, pattern in _OUTCAR_ENERGIES.items():
        hit = out.find(pattern, name, last=True, required=name == "total_energy")
        if hit is not None:
            res["energies_ev"][name] = float(hit[1].group(1))
    version = out.find(r"^\s*(vasp\.\S+)", "", required=False)
    res["vasp_version"] = version[1].group(1) if version else "?"
    return res


def read_chgcar(path: str | Path) -> tuple[np.ndarray, Any]:
    """Density (1/Å³, shape (nx, ny, nz)) and atoms of a CHGCAR/PARCHG file."""
    from ase.calculators.vasp import VaspChargeDensity

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "missing: expected a CHGCAR/PARCHG file here")
    try:
        vcd = VaspChargeDensity(str(path))
    except (ValueError, IndexError, KeyError) as exc:
        raise InputFileError(path, f"not a readable CHGCAR/PARCHG file: {exc}") from None
    if not vcd.chg:
        raise InputFileError(path, "no charge-density block found (truncated or not a CHGCAR?)")
    data = np.asarray(vcd.chg[-1])
    check_finite(path, data, "the charge density")
    return data, vcd.atoms[-1]


def _structure_file(folder: Path) -> Path:
    for name in ("CONTCAR", "POSCAR"):
        if (folder / name).is_file() and (folder / name).stat().st_size > 0:
            return folder / name
    raise InputFileError(folder, "no CONTCAR or POSCAR: a VASP folder needs one for the atoms")


class VaspReader(Reader):
    """A VASP run folder (or a file in it): atoms, OUTCAR scalars, CHGCAR, PARCHG LDOS."""

    name = "vasp"
    description = "VASP: POSCAR/CONTCAR, OUTCAR, CHGCAR, PARCHG stack as LDOS"

    def can_read(self, path: Path) -> bool:
        path = Path(path)
        if path.is_dir():
            return any((path / n).is_file() for n in ("OUTCAR", "POSCAR", "CONTCAR"))
        return path.name.split(".")[0] in ("POSCAR", "CONTCAR", "OUTCAR", "CHGCAR")

    def read(
        self,
        path: Path,
        ldos: Any = None,
        energies: list[float] | None = None,
        energy_window: float | None = None,
        temperature: float | None = None,
    ) -> Snapshot:
        """Read a VASP folder.

        ``ldos``: PARCHG files (folder, glob or list) with their centre ``energies``
        (eV) and ``energy_window`` width (eV, default the energy spacing).
        ``temperature`` (K) is needed only if OUTCAR is absent or ISMEAR ≠ −1.
        """
        import ase.io

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        structure = _structure_file(folder)
        try:
            atoms = ase.io.read(structure, format="vasp")
        except Exception as exc:
            raise InputFileError(structure, f"not a readable POSCAR/CONTCAR: {exc}") from None
        raw = [structure]
        kwargs: dict[str, Any] = {"temperature": temperature}
        attrs: dict[str, Any] = {}
        provenance: dict[str, Any] = {}
        if (folder / "OUTCAR").is_file():
            oc = parse_outcar(folder / "OUTCAR")
            raw.append(folder / "OUTCAR")
            kwargs.update(fermi_energy=oc["fermi_energy"], n_electrons=oc["n_electrons"])
            kwargs["reference"] = oc["energies_ev"]
            attrs.update(ismear=oc["ismear"], sigma_ev=oc["sigma"])
            provenance["vasp_version"] = oc["vasp_version"]
            if temperature is None and oc["ismear"] == -1:
                kwargs["temperature"] = oc["sigma"] / KB_EV
        if (folder / "CHGCAR").is_file():
            density, _ = read_chgcar(folder / "CHGCAR")
            kwargs["density"] = density
            raw.append(folder / "CHGCAR")
        if ldos is not None:
            files = glob_files(ldos, folder, "PARCHG*")
            if energies is None or len(energies) != len(files):
                raise InputFileError(
                    files[0] if files else folder,
                    f"{len(files)} PARCHG files need as many centre energies (energies=[...] in eV), "
                    f"got {None if energies is None else len(energies)}",
                )
            energies = np.asarray(energies, dtype=float)
            order = np.argsort(energies)
            width = energy_window or (float(np.min(np.diff(energies[order]))) if len(energies) > 1 else None)
            if not width or width <= 0:
                raise InputFileError(files[0], "the PARCHG energy window width must be > 0 eV")
            slices = [read_chgcar(files[i])[0] for i in order]
            shapes = {s.shape for s in slices}
            if len(shapes) > 1:
                raise InputFileError(files[0], f"PARCHG files have different grids: {sorted(shapes)}")
            kwargs.update(ldos=np.stack(slices, axis=-1) / width, energies=energies[order])
            attrs["ldos_energy_window"] = width
            raw += [files[i] for i in order]
        provenance.update(file_provenance(raw))
        return Snapshot(
            positions=atoms.positions,
            numbers=atoms.numbers,
            cell=np.array(atoms.cell),
            pbc=tuple(atoms.pbc),
            code="vasp",
            provenance=provenance,
            attrs=attrs,
            **kwargs,
        )


VaspBackend = backend_for(VaspReader)


@hookimpl
def malaflow_readers() -> list[type]:
    return [VaspReader]
