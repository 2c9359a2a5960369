"""MALA's file format: ``X.in.npy`` descriptors, ``X.out.npy`` LDOS, ``X.info.json``.

``X.in.npy`` is (x, y, z, 3 + n_features): the first three columns are the grid
points' Cartesian coordinates (Å), an artefact of MALA's SNAP generation, dropped
here. ``X.out.npy`` is the LDOS in 1/(eV·Å³), ``X.dens.npy`` the density in 1/Å³
(with a trailing axis of length 1), ``X.dos.npy`` the DOS in 1/eV.

MALA keeps the LDOS energy grid in its run parameters, not beside the data, so it is
taken from ``energy_grid=(emin, step)`` or else from the pp.x input (``*.pp.ldos.in``)
that made the LDOS, found beside the files or in ``recreate_data/``. The atoms and
DFT metadata come from ``X.info.json`` or else from a pw.x output beside the files.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from malaflow import Snapshot, get_plugin, hookimpl
from malaflow.errors import InputFileError
from malaflow.readers import FLOAT, Reader, check_finite, file_provenance, ldos_kernel
from malaflow.store import descriptor_array
from malaflow.xarray_backend import backend_for


log = logging.getLogger(__name__)

SUFFIXES = (".in.npy", ".out.npy", ".info.json", ".dens.npy", ".dos.npy")

# MALA's SNAP parameters (DESIGN.md), with which MALA's test data .in.npy files were made.
# A .in.npy does not say which parameters made it: they are taken as these only when the
# user says so (descriptor_params="mala") or the info.json names them.
MALA_BISPECTRUM_PARAMS = {
    "rcutfac": 4.67637, "twojmax": 10, "rfac0": 0.99363, "rmin0": 0.0, "wj": 1.0,
    "radelem": 0.5, "bzeroflag": 0, "quadraticflag": 0, "switchflag": 1,
}


def stem_of(path: Path) -> Path:
    """``dir/X`` for any of ``dir/X.in.npy``, ``dir/X.out.npy``, ... or ``dir/X``."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"not a readable .npy file ({what}): {exc}") from None
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputFileError(path, f"holds {arr.dtype} values; {what} must be real numbers")
    check_finite(path, arr, what)
    return np.asarray(arr)


def pp_ldos_energy_grid(files: list[Path]) -> tuple[np.ndarray, float | None, Path] | None:
    """Energies, broadening and file of the widest pp.x LDOS input among ``files``."""
    best = None
    for f in files:
        text = f.read_text(errors="replace")
        if not re.search(r"plot_num\s*=\s*3\b", text):
            continue
        vals = {}
        for key in ("emin", "emax", "delta_e", "degauss_ldos"):
            m = re.search(rf"\b{key}\s*=\s*({FLOAT})", text, re.IGNORECASE)
            if m:
                vals[key] = float(m.group(1).replace("d", "e").replace("D", "E"))
        if not {"emin", "emax", "delta_e"} <= set(vals):
            continue
        n = int(round((vals["emax"] - vals["emin"]) / vals["delta_e"])) + 1
        if best is None or n > best[0]:
            best = (n, vals, f)
    if best is None:
        return None
    n, vals, f = best
    return vals["emin"] + vals["delta_e"] * np.arange(n), vals.get("degauss_ldos"), f


def _on_grid(coordinates: np.ndarray | None, cell: np.ndarray, grid: tuple[int, int, int]) -> bool:
    """Whether MALA's Cartesian point coordinates (Å) all lie on the points of ``grid``."""
    if coordinates is None:
        return False
    fractional = coordinates.reshape(-1, 3) @ np.linalg.inv(np.asarray(cell)) * np.asarray(grid)
    return bool(np.abs(fractional - np.round(fractional)).max() < 1e-3)


def _descriptor_params(given: Mapping[str, Any] | str | None, named: Any, in_npy: Path,
                       metadata: Path) -> dict[str, Any] | None:
    """The parameters of X.in.npy: ``given`` by the caller, ``named`` by the metadata
    (its ``descriptor_parameters``), or None (unknown)."""
    if given == "mala":
        return dict(MALA_BISPECTRUM_PARAMS)
    if isinstance(given, str):
        raise InputFileError(in_npy, f"descriptor_params={given!r}: give a mapping of parameters or \"mala\"")
    if given is not None:
        return dict(given)
    if named is not None and not isinstance(named, dict):
        raise InputFileError(metadata, "descriptor_parameters must be a mapping of parameter to value")
    return named


class MalaReader(Reader):
    """MALA numpy snapshots (``X.in.npy``/``X.out.npy`` + ``X.info.json`` or a pw.x output)."""

    name = "mala"
    description = "MALA format: X.in.npy, X.out.npy, X.info.json (+ dens/dos .npy)"

    def can_read(self, path: Path) -> bool:
        stem = stem_of(Path(path))
        return any(stem.with_name(stem.name + s).is_file() for s in (".in.npy", ".out.npy"))

    def read(
        self,
        path: Path,
        energy_grid: tuple[float, float] | None = None,
        metadata: str | Path | None = None,
        descriptor_name: str = "bispectrum",
        load_descriptors: bool = True,
        descriptor_params: Mapping[str, Any] | str | None = None,
        subsampled: bool = False,
    ) -> Snapshot:
        """Read ``X.*`` files of one MALA snapshot.

        ``energy_grid=(emin, step)`` in eV overrides the pp.x input; ``metadata`` names
        an info.json or pw.x output to use instead of ``X.info.json``.
        ``descriptor_params`` are the parameters that made ``X.in.npy`` (a mapping, or
        ``"mala"`` for MALA's SNAP defaults); without them, or a ``descriptor_parameters``
        field in the info.json, the features are stored as ``<descriptor_name>-unknown``
        with unknown parameters, so they never pass for a requested descriptor.
        Arrays on fewer points than the metadata's grid are refused unless
        ``subsampled=True`` or the ``.in.npy`` coordinates place them on that grid.
        """
        stem = stem_of(Path(path))
        files = {s: stem.with_name(stem.name + s) for s in SUFFIXES}
        if not (files[".in.npy"].is_file() or files[".out.npy"].is_file()):
            raise InputFileError(stem, "no MALA snapshot: neither .in.npy nor .out.npy exists")
        snap = self._metadata(stem, files, metadata)
        raw = [Path(p) for p in snap.provenance.pop("_raw")]
        grid = snap.grid_shape

        if files[".out.npy"].is_file():
            ldos = _load_npy(files[".out.npy"], "the LDOS")
            energies, broadening, grid_source = self._energies(stem, ldos.shape[-1], energy_grid)
            snap.ldos, snap.energies = ldos, energies
            snap.attrs["ldos_broadening"] = broadening
            if grid_source is not None:  # MALA's QE runs smear with Fermi–Dirac at the snapshot's temperature
                snap.attrs["ldos_broadening_kind"] = ldos_kernel(grid_source.read_text(errors="replace"), "fermi-dirac")
            raw += [files[".out.npy"]] + ([grid_source] if grid_source else [])
        coordinates, named = None, snap.attrs.pop("descriptor_parameters", None)
        if load_descriptors and files[".in.npy"].is_file():
            x = _load_npy(files[".in.npy"], "the descriptors")
            coordinates = x[..., :3]
            params = _descriptor_params(descriptor_params, named, files[".in.npy"], Path(raw[0]))
            if params is None:
                log.warning("%s: the parameters that made it are unknown; stored as %s-unknown "
                            "(pass descriptor_params to use it as %s)", files[".in.npy"].name, descriptor_name,
                            descriptor_name)
                array = descriptor_array(x[..., 3:], params={}, plugin=descriptor_name)
                array.attrs["params_unknown"] = True
                snap.descriptors[f"{descriptor_name}-unknown"] = array
            else:
                snap.descriptors[descriptor_name] = descriptor_array(x[..., 3:], params=params, plugin=descriptor_name)
            raw.append(files[".in.npy"])
        if files[".dens.npy"].is_file():
            density = _load_npy(files[".dens.npy"], "the density")
            snap.density = density.reshape(density.shape[:3])
            raw.append(files[".dens.npy"])
        if files[".dos.npy"].is_file():
            snap.dos = _load_npy(files[".dos.npy"], "the DOS")
            raw.append(files[".dos.npy"])

        shapes = {n: a.shape[:3] for n, a in [("ldos", snap.ldos), ("density", snap.density)] if a is not None}
        shapes.update({f"descriptors/{n}": a.shape[:3] for n, a in snap.descriptors.items()})
        if len(set(shapes.values())) > 1:
            raise InputFileError(stem, f"the arrays disagree on the grid: {shapes}")
        actual = next(iter(shapes.values()))
        if grid is not None and tuple(grid) != tuple(actual):
            # MALA test data can be subsampled from the DFT grid (Al36: 100×20×1 of 108×108×100);
            # a cut or foreign array is not: it must be declared, or its .in.npy must place its
            # points on the DFT grid
            if not (subsampled or _on_grid(coordinates, snap.cell, grid)):
                name, shape = next(iter(shapes.items()))
                suffix = {"ldos": ".out.npy", "density": ".dens.npy"}.get(name, ".in.npy")
                raise InputFileError(files[suffix], f"holds a {'×'.join(map(str, shape))} grid, but "
                                     f"{Path(raw[0]).name} says the DFT grid is "
                                     f"{'×'.join(map(str, grid))}; if it is a subsample of that grid, pass "
                                     "subsampled=True")
            log.info("%s: arrays are %s, a subsample of the DFT grid %s", stem.name, actual, grid)
            snap.attrs["dft_grid_shape"] = list(grid)
            snap.attrs["subsampled"] = True
        snap.grid_shape = tuple(actual)
        snap.provenance.update(file_provenance(raw))
        snap.__post_init__()  # re-validate shapes now that the arrays are set
        return snap

    def _metadata(self, stem: Path, files: dict[str, Path], metadata: str | Path | None) -> Snapshot:
        source = Path(metadata) if metadata is not None else None
        if source is None and files[".info.json"].is_file():
            source = files[".info.json"]
        if source is None:
            candidates = [stem.with_name(stem.name + ".out")]
            candidates += sorted(p for p in stem.parent.glob("*.out") if p not in candidates)
            qe = get_plugin("readers", "qe")()  # the pw.x output is QE's to read
            pw = [p for p in candidates if qe.can_read(p)]
            if stem.with_name(stem.name + ".out") in pw:
                source = pw[0]
            elif len(pw) == 1:
                source = pw[0]
                log.info("%s: taking atoms and DFT metadata from %s", stem.name, source.name)
            else:
                raise InputFileError(
                    stem, "no metadata: expected X.info.json, or one pw.x output in the folder "
                    f"(found {len(pw)}); name it with metadata=PATH"
                )
        if source.suffix == ".json":
            snap = self._from_info_json(source)
        else:
            snap = get_plugin("readers", "qe")().read(source)
            snap.code = "mala"
            snap.provenance = {"qe_version": snap.provenance.get("qe_version")}
        snap.provenance["_raw"] = [str(source)]
        return snap

    @staticmethod
    def _from_info_json(path: Path) -> Snapshot:
        try:
            info = json.loads(path.read_text())
            atoms = info["atoms"]
            ref_keys = {
                "band_energy_dft_calculation": "band_energy",
                "total_energy_dft_calculation": "total_energy",
                "entropy_contribution_dft_calculation": "entropy_contribution",
                "one_electron_contribution": "one_electron_contribution",
                "hartree_contribution": "hartree_contribution",
                "xc_contribution": "xc_contribution",
                "ewald_contribution": "ewald_contribution",
                "number_of_electrons_from_eigenvals": "n_electrons_from_eigenvalues",
            }
            return Snapshot(
                positions=atoms["positions"],
                numbers=atoms["numbers"],
                cell=atoms["cell"],
                pbc=tuple(atoms.get("pbc", (True, True, True))),
                grid_shape=tuple(info["grid_dimensions"]),
                temperature=float(info["temperature"]),
                fermi_energy=float(info["fermi_energy_dft"]),
                n_electrons=float(info["number_of_electrons_exact"]),
                reference={v: float(info[k]) for k, v in ref_keys.items() if k in info},
                code="mala",
                attrs={
                    **{k: info[k] for k in ("ecutwfc", "ecutrho", "degauss", "pseudopotentials", "descriptor_parameters",
                                            "ibrav") if k in info},
                    # eV/Å per atom, as the qe reader keeps pw.x's
                    **({"dft_forces": np.asarray(info["atomic_forces_dft"], dtype=float).reshape(-1, 3).tolist()}
                       if "atomic_forces_dft" in info else {}),
                },
            )
        except json.JSONDecodeError as exc:
            raise InputFileError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"missing or malformed field in MALA info.json: {exc}") from None

    @staticmethod
    def _energies(
        stem: Path, n: int, energy_grid: tuple[float, float] | None
    ) -> tuple[np.ndarray, float | None, Path | None]:
        """Energy grid, LDOS broadening (eV) and the file that defined them."""
        if energy_grid is not None:
            emin, step = energy_grid
            return emin + step * np.arange(n), None, None
        inputs = sorted(stem.parent.glob("*.pp*.in")) + sorted(
            (stem.parent / "recreate_data").glob("*.pp*.in")
        )
        found = pp_ldos_energy_grid(inputs)
        if found is None:
            raise InputFileError(
                stem.with_name(stem.name + ".out.npy"),
                "the LDOS energy grid is unknown: give energy_grid=(emin, step) in eV, or put "
                "the pp.x LDOS input (plot_num=3, emin, emax, delta_e) beside the files",
            )
        energies, broadening, source = found
        if n > len(energies):
            raise InputFileError(
                stem.with_name(stem.name + ".out.npy"),
                f"{n} LDOS energies, but {source.name} defines only {len(energies)}",
            )
        return energies[:n], broadening, source


MalaBackend = backend_for(MalaReader)


@hookimpl
def malaflow_readers() -> list[type]:
    return [MalaReader]
