"""Quantum ESPRESSO reader: pw.x output, pp.x LDOS and density cube files.

Units: pw.x prints lengths in Bohr (alat units), energies in Ry (eigenvalues and the
Fermi energy in eV). pp.x cubes hold the LDOS in 1/(Ry·Bohr³) and the density in
1/Bohr³; cube grids are ordered x slowest, z fastest, with point (i, j, k) at
i/nx·a1 + j/ny·a2 + k/nz·a3 — the same (x, y, z) ordering the snapshot uses, so a
stack of LDOS cubes becomes ``ldos[x, y, z, energy]`` by a reshape and a unit factor.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from malaflow import Snapshot, hookimpl
from malaflow.errors import InputFileError
from malaflow.physics.dos import eigenvalue_dos
from malaflow.physics.fermi import fermi_dirac
from malaflow.readers import (
    FLOAT, Reader, TextFile, check_finite, file_provenance, glob_files, head, ldos_kernel, sha256,
)
from malaflow.grid import voxel_volume
from malaflow.units import BOHR_ANGSTROM, KB_EV, RYDBERG_EV
from malaflow.xarray_backend import backend_for

_ENERGY_TERMS = {
    "total_energy": r"^!\s+total energy\s+=",
    "internal_energy": r"internal energy E=F\+TS\s+=",
    "entropy_contribution": r"smearing contrib\. \(-TS\)\s+=",
    "one_electron_contribution": r"one-electron contribution\s+=",
    "hartree_contribution": r"hartree contribution\s+=",
    "xc_contribution": r"xc contribution\s+=",
    "ewald_contribution": r"ewald contribution\s+=",
}


def is_pw_output(path: Path) -> bool:
    return path.is_file() and "Program PWSCF" in head(path)


def parse_pw_output(path: str | Path) -> dict[str, Any]:
    """Everything malaflow needs from a pw.x scf output, in Å, eV and K."""
    out = TextFile(path)
    if not any("Program PWSCF" in line for line in out.lines[:50]):
        raise out.error("not a pw.x output: no 'Program PWSCF' in its first lines")
    if out.find(r"JOB DONE\.", "", required=False) is None:
        raise out.error(
            f"truncated: no 'JOB DONE.' after {len(out.lines)} lines; pw.x did not finish"
        )
    res: dict[str, Any] = {}
    version = re.search(r"Program PWSCF (\S+)", out.lines[out.find("Program PWSCF", "")[0]])
    res["qe_version"] = version.group(1) if version else "?"

    # celldm(1) is alat with 6 decimals; the "lattice parameter" line has only 4.
    hit = out.find(rf"celldm\(1\)=\s*({FLOAT})", "celldm(1)", required=False)
    if hit is None or float(hit[1].group(1)) == 0:
        hit = out.find(rf"lattice parameter \(alat\)\s+=\s+({FLOAT})", "lattice parameter (alat)")
    alat = float(hit[1].group(1)) * BOHR_ANGSTROM
    i, _ = out.find(r"crystal axes: \(cart\. coord\. in units of alat\)", "crystal axes")
    cell = []
    for k in range(3):
        m = re.search(r"a\(\d\) = \((.*)\)", out.lines[i + 1 + k]) if i + 1 + k < len(out.lines) else None
        if m is None:
            raise out.error("expected 'a(n) = ( ... )' lines after 'crystal axes'", i + 1 + k)
        cell.append(out.floats(i + 1 + k, m.group(1), 3))
    res["cell"] = np.array(cell) * alat

    i, _ = out.find(r"site n\.\s+atom\s+positions \(alat units\)", "atomic positions")
    symbols, positions = [], []
    for k in range(i + 1, len(out.lines)):
        m = re.search(r"^\s*\d+\s+(\S+)\s+tau\(\s*\d+\)\s*=\s*\((.*)\)", out.lines[k])
        if m is None:
            break
        symbols.append(re.sub(r"[\d_-].*$", "", m.group(1)))
        positions.append(out.floats(k, m.group(2), 3))
    if not positions:
        raise out.error("no 'tau( n) = ( ... )' lines after the positions header", i + 1)
    res["symbols"] = symbols
    res["positions"] = np.array(positions) * alat

    def scalar(pattern: str, what: str, required: bool = True, last: bool = False) -> float | None:
        hit = out.find(pattern, what, required=required, last=last)
        return None if hit is None else out.floats(hit[0], hit[1].group(1), 1)[0]

    res["ibrav"] = int(scalar(r"bravais-lattice index\s+=\s+(-?\d+)", "bravais-lattice index"))
    res["n_electrons"] = scalar(rf"number of electrons\s+=\s+({FLOAT})", "number of electrons")
    res["n_bands"] = int(scalar(r"number of Kohn-Sham states=\s+(\d+)", "number of Kohn-Sham states"))
    res["ecutwfc_ry"] = scalar(rf"kinetic-energy cutoff\s+=\s+({FLOAT})", "kinetic-energy cutoff")
    res["ecutrho_ry"] = scalar(rf"charge density cutoff\s+=\s+({FLOAT})", "charge density cutoff")
    hit = out.find(r"FFT dimensions: \(\s*(\d+),\s*(\d+),\s*(\d+)\)", "FFT dimensions")
    res["fft_grid"] = [int(g) for g in hit[1].groups()]

    res["pseudopotentials"] = {}  # element → UPF path, as pw.x read them
    for k, m in out.find_all(r"PseudoPot\. # \d+ for (\w+)\s+read from file:"):
        if k + 1 < len(out.lines) and out.lines[k + 1].strip():
            res["pseudopotentials"][m.group(1)] = Path(out.lines[k + 1].strip())

    i, m = out.find(r"number of k points=\s+(\d+)\s*(.*)$", "number of k points")
    n_k = int(m.group(1))
    smear = re.search(rf"(.*?)smearing, width \(Ry\)=\s*({FLOAT})", m.group(2))
    res["smearing"] = smear.group(1).strip().lower() if smear else "none"
    res["degauss_ry"] = float(smear.group(2)) if smear else None
    weights = []
    for k in range(i + 1, len(out.lines)):
        w = re.search(rf"k\(\s*\d+\) = \(.*\), wk =\s*({FLOAT})", out.lines[k])
        if w:
            weights.append(float(w.group(1)))
            if len(weights) == n_k:
                break
    if len(weights) != n_k and out.find(r"Number of k-points >= 100", "", required=False):
        raise out.error(f"pw.x did not print its {n_k} k-points (over 100, verbosity not 'high'); "
                        "run pw.x again with verbosity = 'high' in &CONTROL", i)
    if len(weights) != n_k:
        raise out.error(f"expected {n_k} k-point weights after this line, found {len(weights)}", i)
    res["k_weights"] = np.array(weights)

    res["fermi_energy"] = scalar(rf"the Fermi energy is\s+({FLOAT})\s+ev", "Fermi energy", last=True)
    res["energies_ev"] = {
        name: value * RYDBERG_EV
        for name, pattern in _ENERGY_TERMS.items()
        if (value := scalar(rf"{pattern}\s*({FLOAT})\s+Ry", name, required=False, last=True)) is not None
    }
    if "total_energy" not in res["energies_ev"]:
        raise out.error("no '!    total energy' line: the scf did not converge or was cut short")
    res["eigenvalues"] = _eigenvalues(out, n_k, res["n_bands"])
    res["forces"] = _forces(out, len(positions))
    return res


def _forces(out: TextFile, n_atoms: int) -> np.ndarray | None:
    """Forces (eV/Å) of the last "Forces acting on atoms" block (tprnfor), or None. The
    breakdown verbosity='high' prints after it uses the same line format, so exactly
    the block's first n_atoms "atom … force =" lines are taken."""
    hit = out.find(r"Forces acting on atoms \(cartesian axes, Ry/au\)", "forces", required=False, last=True)
    if hit is None:
        return None
    rows = []
    for k in range(hit[0] + 1, len(out.lines)):
        m = re.search(r"atom\s+\d+\s+type\s+\d+\s+force =(.*)$", out.lines[k])
        if m:
            rows.append(out.floats(k, m.group(1), 3))
            if len(rows) == n_atoms:
                return np.array(rows) * RYDBERG_EV / BOHR_ANGSTROM
    raise out.error(f"expected {n_atoms} 'atom … force =' lines after this one, found {len(rows)}", hit[0])


def _eigenvalues(out: TextFile, n_k: int, n_bands: int) -> np.ndarray:
    """Kohn–Sham eigenvalues (eV), shape (n_k, n_bands), of the last scf iteration."""
    start, _ = out.find(r"End of self-consistent calculation", "end of the scf", last=True)
    blocks = out.find_all(r"bands \(ev\):", start)
    if len(blocks) < n_k:
        raise out.error(f"expected {n_k} eigenvalue blocks after this line, found {len(blocks)}", start)
    eig = np.empty((n_k, n_bands))
    for kpt, (i, _) in enumerate(blocks[:n_k]):
        values: list[float] = []
        j = i + 1
        while len(values) < n_bands and j < len(out.lines):
            text = out.lines[j].strip()
            if text and "occupation" in text:
                break
            # pw.x glues wide negative numbers together ("-10.1234-9.8765"): split them.
            values += out.floats(j, re.sub(r"(\d)-", r"\1 -", text)) if text else []
            j += 1
        if len(values) != n_bands:
            raise out.error(f"expected {n_bands} eigenvalues, found {len(values)}", i)
        eig[kpt] = values
    return eig


def band_energy_from_eigenvalues(
    eigenvalues: np.ndarray, k_weights: np.ndarray, fermi_energy: float, temperature: float, power: int = 1
) -> float:
    """E_band = Σ_k w_k Σ_n f(ε_nk) ε_nk in eV (QE's weights sum to 2 with spin);
    ``power=0``: the electron count Σ_k w_k Σ_n f(ε_nk) the occupations hold."""
    occ = fermi_dirac(eigenvalues, fermi_energy, KB_EV * temperature)
    return float(np.sum(k_weights[:, None] * occ * eigenvalues**power))


# --------------------------------------------------------------------------- cubes


def read_cube(path: str | Path) -> dict[str, Any]:
    """A Gaussian cube file: grid values (nx, ny, nz), grid shape, cell (Å), comment, and
    its atoms (atomic numbers, positions in Å)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "missing: expected a cube file here")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputFileError(path, "not a cube file: binary content where text was expected") from None
    lines = text.split("\n", 6 + 1)
    try:
        n_atoms = abs(int(lines[2].split()[0]))
        shape, vectors = [], []
        for k in range(3):
            parts = lines[3 + k].split()
            shape.append(int(parts[0]))
            vectors.append([float(v) for v in parts[1:4]])
    except (IndexError, ValueError):
        raise InputFileError(path, "not a cube file: malformed header (lines 3–6)") from None
    body = text.split("\n", 6 + n_atoms)
    if len(body) <= 6 + n_atoms:
        raise InputFileError(path, "truncated: no grid values after the atom lines")
    try:
        atoms = np.array([[float(v) for v in line.split()[:5]] for line in body[6:6 + n_atoms]]).reshape(n_atoms, 5)
    except ValueError:
        raise InputFileError(path, f"malformed atom lines (lines 7–{6 + n_atoms})") from None
    try:
        values = np.array(body[6 + n_atoms].split(), dtype=float)
    except ValueError as exc:
        raise InputFileError(path, f"unreadable grid values: {exc}") from None
    if values.size != int(np.prod(shape)):
        raise InputFileError(
            path, f"header says a {shape[0]}×{shape[1]}×{shape[2]} grid "
            f"({int(np.prod(shape))} values), the file holds {values.size}"
        )
    # Cube grid vectors are steps of the grid (sign of n = units: + Bohr, − Å).
    unit = BOHR_ANGSTROM if shape[0] > 0 else 1.0
    shape = [abs(n) for n in shape]
    cell = np.array(vectors) * np.array(shape)[:, None] * unit
    data = values.reshape(shape)
    check_finite(path, data, "the grid")
    return {"data": data, "shape": tuple(shape), "cell": cell, "comment": lines[1].strip(),
            "numbers": atoms[:, 0].astype(int), "positions": atoms[:, 2:5] * unit}


def check_cube_atoms(cube: dict[str, Any], path: Path, pw: dict[str, Any], pw_path: Path, tol: float = 1e-3) -> None:
    """A cube must hold the atoms of the pw.x run it is said to come from: same species in
    the same order, same positions (Å, up to lattice translations) within ``tol``."""
    from ase.data import atomic_numbers

    numbers = [atomic_numbers[s] for s in pw["symbols"]]
    if len(cube["numbers"]) != len(numbers):
        raise InputFileError(path, f"holds {len(cube['numbers'])} atoms, {pw_path.name} {len(numbers)}: "
                             "not a cube of this run")
    cell = np.asarray(pw["cell"])
    shift = (np.asarray(cube["positions"]) - np.asarray(pw["positions"])) @ np.linalg.inv(cell)
    distance = np.linalg.norm((shift - np.round(shift)) @ cell, axis=1)
    for k, (a, b) in enumerate(zip(cube["numbers"], numbers)):
        if a != b or distance[k] > tol:
            what = f"Z = {a}, {pw_path.name} Z = {b}" if a != b else f"{distance[k]:.4f} Å from its place in {pw_path.name}"
            raise InputFileError(path, f"atom {k + 1} differs ({what}): not a cube of this run")


def _cube_energy(path: Path, comment: str) -> tuple[float, float | None]:
    m = re.search(rf"Energy\s*=\s*({FLOAT})\s*eV(?:,\s*broadening\s*=\s*({FLOAT})\s*eV)?", comment)
    if m is None:
        raise InputFileError(path, "no 'Energy = ... eV' on line 2: not a pp.x LDOS cube", line=2)
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def read_ldos_cubes(
    files: list[Path], cell: np.ndarray | None = None, run: tuple[dict[str, Any], Path] | None = None,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Stack pp.x LDOS cubes into (x, y, z, energy) in 1/(eV·Å³), sorted by energy.

    Cubes from a split pp.x run (several files at one energy) are merged; files at
    the same energy must agree, or the stack is rejected. With ``run`` (the parsed
    pw.x output and its path) each cube's atoms must be that run's.
    """
    by_energy: dict[float, tuple[Path, np.ndarray]] = {}
    broadening = None
    shape = None
    for f in sorted(files):
        cube = read_cube(f)
        energy, broad = _cube_energy(f, cube["comment"])
        broadening = broad if broad is not None else broadening
        if shape is None:
            shape, first = cube["shape"], f
        elif cube["shape"] != shape:
            raise InputFileError(f, f"grid {cube['shape']} differs from {shape} of {first}")
        if cell is not None and not np.allclose(cube["cell"], cell, atol=1e-4):
            raise InputFileError(f, "the cube's cell differs from the pw.x output's cell")
        if run is not None:
            check_cube_atoms(cube, f, *run)
        key = round(energy, 6)
        if key in by_energy:
            other, data = by_energy[key]
            if not np.allclose(data, cube["data"], rtol=1e-3, atol=1e-6):
                raise InputFileError(f, f"LDOS at {energy} eV disagrees with {other}")
            continue
        by_energy[key] = (f, cube["data"])
    energies = np.array(sorted(by_energy))
    _check_energy_gaps(energies, files[0].parent)
    ldos = np.stack([by_energy[e][1] for e in energies], axis=-1)
    ldos /= RYDBERG_EV * BOHR_ANGSTROM**3
    _check_sign(ldos, [by_energy[e][0] for e in energies])
    return ldos, energies, broadening


def _pp_ldos_input(folder: Path) -> str | None:
    """The text of the pp.x LDOS input (plot_num = 3) beside the cubes, if there is one."""
    for pp_in in sorted(folder.glob("*.in")):
        text = pp_in.read_text(errors="replace")
        if re.search(r"plot_num\s*=\s*3\b", text, re.IGNORECASE):
            return text
    return None


def _check_energy_gaps(energies: np.ndarray, folder: Path) -> None:
    """A step twice its neighbours' is a missing cube (a split run may change the step
    for good, which is no gap)."""
    step = np.diff(energies)
    for i in range(1, len(step) - 1):
        if step[i] > 1.5 * max(step[i - 1], step[i + 1]):
            missing = energies[i] + step[i - 1]
            raise InputFileError(folder, f"no LDOS cube at {missing:g} eV between {energies[i]:g} and "
                                         f"{energies[i + 1]:g} eV: a cube of the pp.x run is missing")


def _check_sign(ldos: np.ndarray, files: list[Path]) -> None:
    """pp.x's LDOS is ≥ 0 but for ultrasoft augmentation charges, which are not positive:
    −3e-4 of the peak with 0.15 eV broadening, −1e-2 with 0.025 eV where few states lie
    (real Be runs); far below is a damaged file."""
    low = ldos.min(axis=(0, 1, 2))
    worst = int(np.argmin(low))
    if low[worst] < -0.1 * ldos.max():
        raise InputFileError(files[worst], f"LDOS value {low[worst]:.4g} 1/(eV·Å³): a density of states cannot be "
                                           f"this negative (the largest value is {ldos.max():.4g})")


# --------------------------------------------------------------------------- reader


def _input_beside(path: Path, printed: float | None) -> tuple[Path, float] | None:
    """The pw.x input next to its output (``scf.out`` → ``scf.in``) and its degauss.

    pw.x prints the smearing width with four decimals (0.0019 Ry for 298 K reads back
    as 300 K); the input has it in full. Used only when it rounds to the printed value,
    i.e. when it is the input of this run.
    """
    pw_in = path.with_suffix(".in")
    if printed is None or pw_in == path or not pw_in.is_file():
        return None
    text = "\n".join(line.split("!")[0] for line in pw_in.read_text(errors="replace").splitlines())
    # a namelist line may hold several assignments: "  smearing='fd', degauss=1.8874d-3,"
    m = re.search(rf"(?:^|[\s,])degauss\s*=\s*({FLOAT})", text, re.MULTILINE | re.IGNORECASE)
    if m is None:
        return None
    value = float(m.group(1).lower().replace("d", "e"))
    return (pw_in, value) if abs(value - printed) <= 0.5e-4 + 1e-12 else None


class QEReader(Reader):
    """pw.x output (+ pp.x LDOS cubes via ``ldos=``, density cube via ``density=``)."""

    name = "qe"
    description = "Quantum ESPRESSO: pw.x output, pp.x LDOS/density cube files"

    def can_read(self, path: Path) -> bool:
        return is_pw_output(Path(path))

    def read(
        self, path: Path, ldos: Any = None, density: Any = None, **options: Any
    ) -> Snapshot:
        """Read a pw.x output.

        ``ldos``: a folder of ``*ldos.cube`` files, a glob, or a list of cube files;
        ``density``: a pp.x density cube (plot_num=0). Relative paths are taken
        from the folder of the pw.x output.
        """
        if options:
            raise InputFileError(path, f"unknown options for the qe reader: {sorted(options)}")
        path = Path(path)
        pw = parse_pw_output(path)
        from ase.data import atomic_numbers

        raw = [path]
        pw_in = _input_beside(path, pw["degauss_ry"])
        if pw_in is not None:
            pw["degauss_ry"] = pw_in[1]
            raw.append(pw_in[0])
        temperature = None
        if pw["degauss_ry"] is not None and "fermi-dirac" in pw["smearing"]:
            temperature = pw["degauss_ry"] * RYDBERG_EV / KB_EV
        reference = dict(pw["energies_ev"])
        if temperature is not None:
            reference["band_energy"] = band_energy_from_eigenvalues(
                pw["eigenvalues"], pw["k_weights"], pw["fermi_energy"], temperature
            )
            # MALA's number_of_electrons_from_eigenvals: what the printed eigenvalues hold
            reference["n_electrons_from_eigenvalues"] = band_energy_from_eigenvalues(
                pw["eigenvalues"], pw["k_weights"], pw["fermi_energy"], temperature, power=0
            )
        grid_shape = tuple(pw["fft_grid"])
        snap_kwargs: dict[str, Any] = {}
        attrs: dict[str, Any] = {
            "ecutwfc_ry": pw["ecutwfc_ry"], "ecutrho_ry": pw["ecutrho_ry"],
            "smearing": pw["smearing"], "degauss_ry": pw["degauss_ry"],
            "n_bands": pw["n_bands"], "n_kpoints": len(pw["k_weights"]),
            "ecutrho": pw["ecutrho_ry"],  # Ry, the key the total energy reads (as in MALA's info files)
            "ibrav": pw["ibrav"],
        }
        if pw["forces"] is not None:
            attrs["dft_forces"] = pw["forces"].tolist()  # eV/Å, per atom (pw.x's, net force removed)
        if pw["pseudopotentials"]:
            attrs["pseudopotentials"] = {el: upf.name for el, upf in pw["pseudopotentials"].items()}
            dirs = sorted({str(upf.parent) for upf in pw["pseudopotentials"].values()})
            attrs["pseudo_dir"] = dirs[0] if len(dirs) == 1 else dirs
            # the files pw.x read, by content: a UPF of the same name found later must be this one
            attrs["pseudopotential_sha256"] = {el: sha256(upf) for el, upf in pw["pseudopotentials"].items()
                                               if upf.is_file()}
        if ldos is not None:
            files = glob_files(ldos, path.parent, "*ldos.cube")
            if not files:
                raise InputFileError(path.parent / str(ldos), "no LDOS cube files (*ldos.cube) found here")
            values, energies, broadening = read_ldos_cubes(files, cell=pw["cell"], run=(pw, path))
            if values.shape[:3] != grid_shape:
                raise InputFileError(
                    files[0], f"LDOS grid {values.shape[:3]} is not the pw.x FFT grid {grid_shape}"
                )
            snap_kwargs.update(ldos=values, energies=energies)
            attrs["ldos_broadening"] = broadening
            kernel = ldos_kernel(_pp_ldos_input(files[0].parent), pw["smearing"])
            if kernel:
                attrs["ldos_broadening_kind"] = kernel
            if broadening and kernel:  # the DOS of the eigenvalues, broadened as pp.x broadened the LDOS
                snap_kwargs["dos"] = eigenvalue_dos(pw["eigenvalues"], pw["k_weights"], energies, broadening, kernel)
            raw += files
        if density is not None:
            (dfile,) = glob_files(density, path.parent, "*.cube")
            cube = read_cube(dfile)
            check_cube_atoms(cube, dfile, pw, path)
            if cube["shape"] != grid_shape:
                raise InputFileError(dfile, f"grid {cube['shape']} is not the pw.x FFT grid {grid_shape}")
            snap_kwargs["density"] = cube["data"] / BOHR_ANGSTROM**3
            raw.append(dfile)
            attrs["density_electrons"] = float(
                snap_kwargs["density"].sum() * voxel_volume(pw["cell"], grid_shape)
            )
        return Snapshot(
            positions=pw["positions"],
            numbers=[atomic_numbers[s] for s in pw["symbols"]],
            cell=pw["cell"],
            grid_shape=grid_shape,
            temperature=temperature,
            fermi_energy=pw["fermi_energy"],
            n_electrons=pw["n_electrons"],
            reference=reference,
            code="qe",
            eigenvalues=pw["eigenvalues"],
            k_weights=pw["k_weights"],
            provenance={"qe_version": pw["qe_version"], **file_provenance(raw)},
            attrs=attrs,
            **snap_kwargs,
        )


QEBackend = backend_for(QEReader)


@hookimpl
def malaflow_readers() -> list[type]:
    return [QEReader]
