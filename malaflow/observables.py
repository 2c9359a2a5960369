"""`malaflow.observables(ds)`: the physics scalars of a snapshot, via its target plugin."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import MalaflowError
from .physics.dos import eigenvalue_dos, electron_count
from .physics.energy import energy_terms as terms
from .physics.pseudopotential import read_upf
from .readers import sha256
from .targets import DEFAULT_TARGET, get_target


def observables(ds: xr.Dataset, target: str | None = None, scheme: str = "analytic", **options: Any):
    """Fermi level, electron count, band energy and −TS of a snapshot (eV, K).

    The work is the target plugin's: ``target``, else the one the dataset names
    (attribute ``target``, set on predictions), else ``ldos``; ``scheme`` is
    ``"analytic"`` (exact Fermi–Dirac integrals of a piecewise-linear DOS) or
    ``"quadrature"``. Options: ``temperature``, ``n_electrons``, ``fermi_energy``.
    """
    return target_of(ds, target).observables(ds, scheme=scheme, **options)


def target_of(ds: xr.Dataset, name: str | None = None):
    """The target plugin for a dataset: ``name``, else the dataset's ``target`` attribute, else the default."""
    return get_target(name or ds.attrs.get("target") or DEFAULT_TARGET)


def pseudopotential_dirs(ds: xr.Dataset, pseudo_dir: str | Path | None = None) -> list[Path]:
    """Where a snapshot's UPF files are looked for, in order: ``pseudo_dir``,
    $MALAFLOW_PSEUDO_DIR, $ESPRESSO_PSEUDO, the folders of its raw files (and their
    parents), the folder(s) the DFT code read them from, the model folder of a
    prediction (then, under a checksum condition, the UPF files shipped with malaflow)."""
    dirs = [pseudo_dir, os.environ.get("MALAFLOW_PSEUDO_DIR"), os.environ.get("ESPRESSO_PSEUDO")]
    provenance = ds.attrs.get("provenance") or {}
    for file in (provenance.get("files") or {}):
        dirs += [Path(file).parent, Path(file).parent.parent]
    read_from = ds.attrs.get("pseudo_dir") or []
    dirs += [read_from] if isinstance(read_from, str) else list(read_from)
    dirs.append(provenance.get("model"))
    return list(dict.fromkeys(Path(d) for d in dirs if d))


#: UPF files shipped with malaflow: used only when the snapshot records the checksum of
#: the file its DFT run read and the shipped file has it (a same-named file may differ).
SHIPPED_PSEUDO_DIRS = [Path(__file__).parent / "demo_data" / "Be2", Path(__file__).parent / "demo_data" / "Al"]


def find_pseudopotentials(ds: xr.Dataset, pseudo_dir: str | Path | None = None) -> dict[str, Any]:
    """{element: Pseudopotential} for the UPF files a snapshot names. Where the snapshot
    records their SHA-256 (the QE reader does), a file of the same name with other
    content is passed over."""
    names = ds.attrs.get("pseudopotentials") or {}
    if not names:
        raise MalaflowError("the snapshot does not name its pseudopotentials (attribute 'pseudopotentials')")
    checksums = ds.attrs.get("pseudopotential_sha256") or {}
    trusted = pseudopotential_dirs(ds, pseudo_dir)
    dirs = trusted + [d for d in SHIPPED_PSEUDO_DIRS if d not in trusted]
    found = {}
    for element, name in names.items():
        rejected = []
        for d in dirs:
            path = d / name
            if not path.is_file():
                continue
            expected = checksums.get(element)
            if expected is None and d not in trusted:
                rejected.append(f"{path} (shipped with malaflow; the snapshot records no checksum to prove it "
                                "is the file its DFT run used)")
            elif expected is not None and sha256(path) != expected:
                rejected.append(f"{path} (other content than the file the DFT run read)")
            else:
                found[element] = read_upf(path)
                break
        else:
            detail = f"; passed over: {'; '.join(rejected)}" if rejected else ""
            raise MalaflowError(
                f"pseudopotential {name} for {element} not found in {', '.join(map(str, dirs))}{detail}; "
                "pass pseudo_dir= or set MALAFLOW_PSEUDO_DIR"
            )
    return found


def energy_terms(ds: xr.Dataset, scheme: str = "analytic", pseudo_dir: str | Path | None = None):
    """Band, one-electron, Hartree, xc, Ewald, −TS and total energy (eV) from a
    snapshot's LDOS: the density at the self-consistent Fermi level, its atoms and its
    pseudopotentials (needs the whole density in memory, for the FFTs)."""
    return energy_terms_from(ds, observables(ds, scheme=scheme), scheme, pseudo_dir)


def energy_terms_from(ds: xr.Dataset, obs: Any, scheme: str = "analytic", pseudo_dir: str | Path | None = None):
    """:func:`energy_terms` with the observables (Fermi level, band energy) already at hand."""
    density = target_of(ds).density(ds, obs.fermi_energy, scheme).values
    return terms(density, np.array(ds.attrs["cell"]), ds["positions"].values, ds["numbers"].values,
                 find_pseudopotentials(ds, pseudo_dir), obs.band_energy, obs.entropy_contribution,
                 ds.attrs.get("ecutrho"))


def observables_table(ds: xr.Dataset, scheme: str = "analytic", pseudo_dir: str | Path | None = None) -> str:
    """Our observables beside the DFT reference values stored in the snapshot; with
    the pseudopotentials at hand, the energy terms and the total energy too."""
    obs = observables(ds, scheme=scheme)
    ref = ds.attrs.get("reference") or {}
    rows = [
        ("Fermi energy (eV)", obs.fermi_energy, ds.attrs.get("fermi_energy")),
        ("electrons", obs.n_electrons, ds.attrs.get("n_electrons")),
        ("band energy (eV)", obs.band_energy, ref.get("band_energy")),
        ("-TS (eV)", obs.entropy_contribution, ref.get("entropy_contribution")),
    ]
    note = None
    try:
        e = energy_terms_from(ds, obs, scheme, pseudo_dir)
    except MalaflowError as exc:
        note = f"(total energy not computed: {exc})"
    else:
        rows += [
            ("one-electron (eV)", e.one_electron, ref.get("one_electron_contribution")),
            ("Hartree (eV)", e.hartree, ref.get("hartree_contribution")),
            ("xc (eV)", e.xc, ref.get("xc_contribution")),
            ("Ewald (eV)", e.ewald, ref.get("ewald_contribution")),
            ("total free energy (eV)", e.total_energy, ref.get("total_energy")),
            ("internal energy (eV)", e.internal_energy,
             None if ref.get("total_energy") is None else ref["total_energy"] - ref.get("entropy_contribution", 0.0)),
        ]
    lines = [f"{'quantity':<20} {'from LDOS':>14} {'DFT reference':>14} {'difference':>12}"]
    for name, ours, dft in rows:
        diff = f"{ours - dft:+12.6f}" if dft is not None else f"{'':>12}"
        dft_s = f"{dft:14.6f}" if dft is not None else f"{'-':>14}"
        lines.append(f"{name:<20} {ours:14.6f} {dft_s} {diff}")
    lines.append(f"(scheme {obs.scheme}, T = {obs.temperature:.2f} K, Fermi level self-consistent)")
    if note:
        lines.append(note)
    comparison = eigenvalue_dos_comparison(ds, obs)
    if comparison:
        lines.append(comparison)
    return "\n".join(lines)


def eigenvalue_dos_comparison(ds: xr.Dataset, obs: Any) -> str | None:
    """The DFT eigenvalues' DOS, broadened as pp.x broadened the LDOS: its electron count
    at the DFT Fermi level, and how far the snapshot's own DOS (from its LDOS) departs from
    it — where they part, the LDOS misses states (too few bands, a window cutting a band)."""
    width = ds.attrs.get("ldos_broadening")
    if "eigenvalues" not in ds or "energy" not in ds.coords or not width:
        return None
    energies = ds["energy"].values
    kernel = ds.attrs.get("ldos_broadening_kind")
    if kernel is None:
        return None
    from_eigenvalues = eigenvalue_dos(ds["eigenvalues"].values, ds["k_weights"].values, energies, width, kernel)
    diff = np.abs(np.asarray(target_of(ds).dos(ds)) - from_eigenvalues).max()
    line = f"DOS from the eigenvalues ({kernel} broadening {width:g} eV, on the LDOS energies): "
    if ds.attrs.get("fermi_energy") is not None:
        n = electron_count(from_eigenvalues, energies, ds.attrs["fermi_energy"], obs.temperature, obs.scheme)
        line += f"{n:.4f} electrons to the DFT Fermi level (DFT: {ds.attrs.get('n_electrons')}); "
    return line + f"the LDOS's DOS departs from it by up to {diff:.4g} 1/eV ({diff / from_eigenvalues.max():.1%} of its peak)"
