"""Reader plugins against MALA's reference data (QE outputs, pp.x cubes, MALA npy)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import malaflow
from malaflow.errors import InputFileError
from malaflow.units import KB_EV, RYDBERG_EV

from conftest import DEMO_DATA


@pytest.fixture(scope="module")
def be_info(mala_data):
    return [json.loads((mala_data / "Be2" / f"Be_snapshot{i}.info.json").read_text()) for i in range(4)]


# ------------------------------------------------------------------ MALA format


@pytest.mark.parametrize("i", range(4))
def test_mala_be2_snapshots(mala_data, be_info, i):
    snap = malaflow.read_snapshot(mala_data / "Be2" / f"Be_snapshot{i}.out.npy", descriptor_params="mala")
    info = be_info[i]
    assert snap.code == "mala" and snap.grid_shape == (18, 18, 27)
    np.testing.assert_allclose(snap.energies, -5 + 2.5 * np.arange(11))
    assert snap.n_electrons == 4 and snap.temperature == pytest.approx(info["temperature"])
    assert snap.fermi_energy == info["fermi_energy_dft"]
    assert snap.reference["band_energy"] == info["band_energy_dft_calculation"]
    np.testing.assert_array_equal(snap.positions, info["atoms"]["positions"])
    np.testing.assert_array_equal(snap.ldos, np.load(mala_data / "Be2" / f"Be_snapshot{i}.out.npy"))
    if i == 0:  # the repository ships snapshot 0's .in.npy only
        bisp = snap.descriptors["bispectrum"]
        assert bisp.shape == (18, 18, 27, 91) and bisp.attrs["params"]["twojmax"] == 10
        np.testing.assert_array_equal(bisp.values, np.load(mala_data / "Be2" / "Be_snapshot0.in.npy")[..., 3:])
    else:
        assert "bispectrum" not in snap.descriptors
    assert snap.attrs["ldos_broadening"] == 5.0  # degauss_ldos of recreate_data/Be.pp.ldos.in


@pytest.mark.shared_data
def test_mala_al36_subsampled_with_metadata_from_pw_output(shared_mala_data):
    snap = malaflow.read_snapshot(shared_mala_data / "Al36" / "Al_debug_2k_nr0.in.npy")
    assert snap.grid_shape == (100, 20, 1) and snap.attrs["dft_grid_shape"] == [108, 108, 100]
    assert snap.ldos.shape == (100, 20, 1, 250)
    np.testing.assert_allclose(snap.energies, -10 + 0.1 * np.arange(250), atol=1e-12)
    assert snap.n_electrons == 108 and snap.fermi_energy == 7.5327 and snap.n_atoms == 36


def test_mala_energy_grid_must_be_known(be2_copy):
    shutil.rmtree(be2_copy / "recreate_data")
    with pytest.raises(InputFileError, match=r"Be_snapshot1\.out\.npy: the LDOS energy grid is unknown"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot1.out.npy")
    snap = malaflow.read_snapshot(be2_copy / "Be_snapshot1.out.npy", energy_grid=(-5.0, 2.5))
    assert snap.energies[-1] == 20.0


def test_mala_nan_is_rejected_naming_the_file(be2_copy):
    ldos = np.load(be2_copy / "Be_snapshot2.out.npy")
    ldos[3, 4, 5, 6] = np.nan
    np.save(be2_copy / "Be_snapshot2.out.npy", ldos)
    with pytest.raises(InputFileError, match=r"Be_snapshot2\.out\.npy: the LDOS has 1 NaN/inf values \(first at index \(3, 4, 5, 6\)\)"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot2.out.npy")


def test_mala_npy_of_strings_is_named(be2_copy):
    np.save(be2_copy / "Be_snapshot2.out.npy", np.array(["a", "b"]))
    with pytest.raises(InputFileError, match=r"Be_snapshot2\.out\.npy: holds <U1 values; the LDOS must be real numbers"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot2.out.npy")


# ------------------------------------------------------------------ Quantum ESPRESSO


@pytest.mark.parametrize(
    "relpath, fermi, n_e, n_atoms",
    [("Be2/Be_snapshot0.out", 8.743, 4, 2), ("Al36/Al.pw.scf.out", 7.5327, 108, 36)],
)
def test_qe_pw_output_scalars(mala_data, relpath, fermi, n_e, n_atoms):
    snap = malaflow.read_snapshot(mala_data / relpath)
    assert snap.code == "qe"
    assert snap.fermi_energy == pytest.approx(fermi, abs=5e-5)
    assert snap.n_electrons == n_e and snap.n_atoms == n_atoms
    # Fermi–Dirac smearing width 0.0019 Ry is the electronic temperature k_B·T.
    assert snap.temperature == pytest.approx(0.0019 * RYDBERG_EV / KB_EV, rel=1e-12)


def test_qe_be_matches_info_json(mala_data, be_info):
    """The pw.x output and MALA's info.json (written by MALA from that output) agree."""
    for i in range(4):
        snap = malaflow.read_snapshot(mala_data / "Be2" / f"Be_snapshot{i}.out")
        info = be_info[i]
        # pw.x prints celldm(1) with 6 decimals (Bohr), the axes with 6 and the
        # positions with 7 (alat units): rounding of at most ~0.5e-6·alat ≈ 1.2e-6 Å each.
        np.testing.assert_allclose(snap.cell, info["atoms"]["cell"], atol=3e-6)
        np.testing.assert_allclose(snap.positions, info["atoms"]["positions"], atol=3e-6)
        # MALA converted Ry → eV with an older CODATA Rydberg (relative difference < 1e-7).
        for ours, theirs in [("total_energy", "total_energy_dft_calculation"), ("ewald_contribution", "ewald_contribution"),
                             ("entropy_contribution", "entropy_contribution_dft_calculation")]:
            assert snap.reference[ours] == pytest.approx(info[theirs], rel=1e-7, abs=1e-9), ours
        # Band energy Σ_k w_k Σ_n f ε from the printed (4-decimal) eigenvalues.
        assert snap.reference["band_energy"] == pytest.approx(info["band_energy_dft_calculation"], abs=1e-6)
        assert snap.attrs["n_kpoints"] == 512 and snap.attrs["ecutwfc_ry"] == 40


def test_qe_al36_band_energy_from_eigenvalues(mala_data):
    snap = malaflow.read_snapshot(mala_data / "Al36" / "Al.pw.scf.out")
    # QE's own band energy for this run (issue #4): 323.4733 eV.
    assert snap.reference["band_energy"] == pytest.approx(323.4733, abs=1e-3)
    assert snap.reference["total_energy"] == pytest.approx(-179.00859567 * RYDBERG_EV, abs=1e-6)


def test_qe_cubes_equal_mala_ldos(mala_data):
    """pp.x cubes (1/(Ry·Bohr³)) stacked and converted equal MALA's .out.npy (1/(eV·Å³))."""
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out", ldos="cubes/")
    ref = np.load(mala_data / "Be2" / "Be_snapshot0.out.npy")
    np.testing.assert_allclose(snap.energies, -5 + 2.5 * np.arange(11))
    assert snap.ldos.shape == ref.shape
    # MALA stored the same cube values as float32: agreement to float32 rounding.
    np.testing.assert_allclose(snap.ldos, ref, rtol=np.finfo(np.float32).eps, atol=0)
    assert snap.attrs["ldos_broadening"] == 5.0
    assert len(snap.provenance["files"]) == 1 + 24  # pw.x output + all cubes (split runs merged)


def test_qe_split_cubes_that_disagree_are_rejected(be2_copy):
    cube = be2_copy / "cubes" / "tmp.pp01Be_part2_ldos.cube"  # E = 0 eV, as tmp.pp03Be_ldos.cube
    lines = cube.read_text().splitlines()
    lines[8] = " ".join(["0.99999E+00"] * len(lines[8].split()))
    cube.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match="LDOS at 0.0 eV disagrees with"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")


def test_qe_truncated_output(be2_copy):
    out = be2_copy / "Be_snapshot0.out"
    out.write_text("\n".join(out.read_text().splitlines()[:4795]))
    with pytest.raises(InputFileError, match=r"Be_snapshot0\.out: truncated: no 'JOB DONE\.' after 4795 lines"):
        malaflow.read_snapshot(out, reader="qe")


def test_qe_output_without_its_k_points_says_why(be2_copy):
    """pw.x prints no k-point list when there are over 100 and verbosity is not 'high'."""
    out = be2_copy / "Be_snapshot0.out"
    lines = out.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "number of k points=" in line)
    kept = [line for line in lines[start + 1:] if "wk =" not in line and "cart. coord. in units 2pi/alat" not in line]
    notice = "     Number of k-points >= 100: set verbosity='high' to print them."
    out.write_text("\n".join(lines[:start + 1] + [notice] + kept) + "\n")
    with pytest.raises(InputFileError, match=rf"Be_snapshot0\.out:{start + 1}: pw.x did not print its 512 k-points"):
        malaflow.read_snapshot(out, reader="qe")


def test_qe_missing_total_energy_names_the_line(be2_copy):
    out = be2_copy / "Be_snapshot0.out"
    out.write_text(out.read_text().replace("the Fermi energy is", "the Fermi level was"))
    with pytest.raises(InputFileError, match=r"Be_snapshot0\.out: no Fermi energy found"):
        malaflow.read_snapshot(out)


def test_qe_cube_with_wrong_value_count(be2_copy):
    cube = be2_copy / "cubes" / "tmp.pp05Be_ldos.cube"
    text = cube.read_text().splitlines()
    text[3] = text[3].replace("18", "17", 1)
    cube.write_text("\n".join(text) + "\n")
    with pytest.raises(InputFileError, match=r"tmp\.pp05Be_ldos\.cube: header says a 17×18×27 grid \(8262 values\), the file holds 8748"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")


def test_qe_cube_of_binary_garbage_is_named(be2_copy):
    (be2_copy / "cubes" / "tmp.pp05Be_ldos.cube").write_bytes(bytes(range(128, 256)) * 64)
    with pytest.raises(InputFileError, match=r"tmp\.pp05Be_ldos\.cube: not a cube file: binary content"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")


def test_qe_missing_cube_or_impossible_value_is_refused_at_ingest(be2_copy, mala_data):
    for part in (be2_copy / "cubes").glob("*_part*"):  # the split run's cubes would fill the gap
        part.unlink()
    missing = be2_copy / "cubes" / "tmp.pp09Be_ldos.cube"
    missing.unlink()
    with pytest.raises(InputFileError, match=r"cubes: no LDOS cube at 15 eV between 12.5 and 17.5 eV"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")
    shutil.copyfile(mala_data / "Be2" / "cubes" / missing.name, missing)
    cube = be2_copy / "cubes" / "tmp.pp10Be_ldos.cube"
    lines = cube.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if i > 8 and len(line.split()) == 6)
    lines[first] = " ".join(["-5000.0", *lines[first].split()[1:]])
    cube.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=r"tmp\.pp10Be_ldos\.cube: LDOS value -\d+.* cannot be this negative"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")


def test_qe_cube_of_another_grid(be2_copy, tmp_path):
    from ase.io.cube import write_cube
    from malaflow_plugins.readers.qe import read_cube

    folder = tmp_path / "coarse"
    folder.mkdir()
    for f in sorted((be2_copy / "cubes").glob("tmp.pp??Be_ldos.cube")):
        cube = read_cube(f)
        atoms = malaflow.read_snapshot(be2_copy / "Be_snapshot0.out").atoms
        with open(folder / f.name, "w") as fh:
            write_cube(fh, atoms, cube["data"][::2, ::2, :])
        lines = (folder / f.name).read_text().split("\n")
        lines[1] = cube["comment"]  # pp.x's "Energy = ... eV, broadening = ... eV" line
        (folder / f.name).write_text("\n".join(lines))
    with pytest.raises(InputFileError, match=r"LDOS grid \(9, 9, 27\) is not the pw.x FFT grid \(18, 18, 27\)"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos=folder)


def test_missing_files(tmp_path, be2_copy):
    with pytest.raises(InputFileError, match="no such file or directory"):
        malaflow.read_snapshot(tmp_path / "nope.out")
    with pytest.raises(InputFileError, match=r"empty: no LDOS cube files \(\*ldos\.cube\) found here"):
        (be2_copy / "empty").mkdir()
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="empty")


def test_xarray_backend(mala_data):
    ds = xr.open_dataset(mala_data / "Be2" / "Be_snapshot0.out", engine="malaflow_qe", ldos="cubes/")
    assert ds.attrs["fermi_energy"] == 8.743 and ds.ldos.dims == ("x", "y", "z", "energy")
    ds = xr.open_dataset(mala_data / "Be2" / "Be_snapshot1.out.npy", engine="malaflow_mala")
    assert ds.attrs["n_electrons"] == 4.0


# ------------------------------------------------------------------ VASP


def test_vasp_reader_on_a_real_vasp_run():
    """bcc Fe from VASP 5.4.1 itself (tests/data/vasp-full-job-sample, from pyiron's test
    files): every number below is the one the OUTCAR, POSCAR and CHGCAR text states."""
    from conftest import REPO

    run = REPO / "tests" / "data" / "vasp-full-job-sample"
    snap = malaflow.read_snapshot(run, reader="vasp")
    assert snap.code == "vasp" and snap.n_electrons == 16.0  # NELECT = 16.0000
    assert snap.fermi_energy == 5.9788  # E-fermi :   5.9788
    assert snap.reference["total_energy"] == -17.73798679  # the last free energy TOTEN
    assert snap.reference["internal_energy"] == -17.72353582  # energy without entropy
    assert snap.reference["band_energy"] == 59.05170914  # the last EBANDS
    assert snap.reference["ewald_contribution"] == -1197.80999809  # TEWEN
    assert snap.temperature is None  # ISMEAR = 1 (Methfessel–Paxton) is no electronic temperature
    np.testing.assert_array_equal(snap.cell, np.diag([2.8, 2.8, 2.8]))
    np.testing.assert_allclose(snap.positions, [[0, 0, 0], [1.4, 1.4, 1.4]], atol=1e-12)
    assert list(snap.numbers) == [26, 26] and snap.grid_shape == (28, 28, 28)
    # CHGCAR holds ρ·V; ρ integrates to the 16 valence electrons (1.5e-5 off: its 11 digits)
    assert float(snap.density.sum()) * 2.8**3 / 28**3 == pytest.approx(16.0, abs=1.5e-4)
    first = float((run / "CHGCAR").read_text().split("28   28   28")[1].split()[0])  # first grid value
    assert snap.density[0, 0, 0] == pytest.approx(first / 2.8**3, rel=1e-12)


# The files below are written by ASE (POSCAR, CHGCAR, PARCHG) and by hand in OUTCAR's
# format from the Be2 QE data: PARCHG files and Fermi–Dirac smearing, which the real run lacks.

OUTCAR = """ vasp.6.4.2 20Jul23 (build Nov 20 2023 12:00:00) complex
 POTCAR:    PAW_PBE Be_sv 06Sep2000
   ISMEAR =     -1;   SIGMA  =   0.0258 broadening in eV -4-tet -1-fermi 0-gaus
   NELECT =       4.0000    total number of electrons
 E-fermi :   8.7430     XC(G=0):  -9.1234     alpha+bet : -5.4321

  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)
  ---------------------------------------------------
  alpha Z        PSCENC =         0.21345678
  Ewald energy   TEWEN  =       -83.51681945
  -Hartree energ DENC   =        -1.23456789
  -exchange      EXHF   =         0.00000000
  -V(xc)+E(xc)   XCENC  =         2.34567890
  PAW double counting   =        10.00000000      -10.50000000
  entropy T*S    EENTRO =        -0.00057402
  eigenvalues    EBANDS =        12.07658825
  atomic energy  EATOM  =       -10.00000000
  ---------------------------------------------------
  free energy    TOTEN  =       -73.03705522 eV

  energy  without entropy=      -73.03648120  energy(sigma->0) =      -73.03676821

 General timing and accounting informations for this job:
"""


@pytest.fixture()
def vasp_run(mala_data, tmp_path):
    from ase.calculators.vasp import VaspChargeDensity
    from ase.io import write

    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy")
    run = tmp_path / "vasp"
    run.mkdir()
    write(run / "POSCAR", snap.atoms, format="vasp", direct=True)
    (run / "OUTCAR").write_text(OUTCAR)
    vcd = VaspChargeDensity(None)
    vcd.atoms, vcd.chg = [snap.atoms], [snap.density.astype(float)]
    vcd.write(str(run / "CHGCAR"), format="chgcar")
    for k, e in enumerate(snap.energies):
        vcd.chg = [snap.ldos[..., k].astype(float) * 2.5]  # charge in a 2.5 eV window
        vcd.write(str(run / f"PARCHG.E{k:02d}"), format="chgcar")
    return run, snap


def test_vasp_folder(vasp_run):
    run, ref = vasp_run
    snap = malaflow.read_snapshot(run, ldos="PARCHG*", energies=list(ref.energies))
    assert snap.code == "vasp" and snap.n_electrons == 4 and snap.fermi_energy == 8.743
    assert snap.temperature == pytest.approx(0.0258 / KB_EV)
    assert snap.reference["total_energy"] == -73.03705522
    assert snap.reference["band_energy"] == 12.07658825
    assert snap.reference["internal_energy"] == -73.03648120
    np.testing.assert_allclose(snap.positions, ref.positions, atol=1e-8)
    np.testing.assert_allclose(snap.cell, ref.cell, atol=1e-12)
    np.testing.assert_allclose(snap.density, ref.density, rtol=1e-9)
    np.testing.assert_allclose(snap.ldos, ref.ldos, rtol=1e-9)
    assert snap.attrs["ldos_energy_window"] == 2.5


def test_vasp_bad_input(vasp_run):
    run, ref = vasp_run
    with pytest.raises(InputFileError, match="11 PARCHG files need as many centre energies"):
        malaflow.read_snapshot(run, ldos="PARCHG*")
    (run / "OUTCAR").write_text(OUTCAR.split("General timing")[0])
    with pytest.raises(InputFileError, match="OUTCAR: truncated"):
        malaflow.read_snapshot(run, reader="vasp")
    (run / "OUTCAR").unlink()
    chg = run / "CHGCAR"
    chg.write_text(chg.read_text()[: len(chg.read_text()) // 2])
    with pytest.raises(InputFileError, match="CHGCAR"):
        malaflow.read_snapshot(run, reader="vasp")


def test_qe_temperature_and_pseudopotentials(tmp_path):
    """pw.x prints degauss to 4 decimals (0.0019 Ry ≈ 300 K); the scf.in beside scf.out
    has 0.0018874 Ry ≈ 298 K, which is what the run used. An input of another run (its
    degauss does not round to the printed one) is not used."""
    from conftest import REPO

    data = REPO / "tests" / "data" / "be2-converged"
    shutil.copy(data / "scf.out", tmp_path / "scf.out")
    alone = malaflow.read_snapshot(tmp_path / "scf.out", reader="qe")
    assert alone.temperature == pytest.approx(0.0019 * RYDBERG_EV / KB_EV, rel=1e-12)
    shutil.copy(data / "scf.in", tmp_path / "scf.in")
    paired = malaflow.read_snapshot(tmp_path / "scf.out", reader="qe")
    assert paired.temperature == pytest.approx(0.0018874 * RYDBERG_EV / KB_EV, rel=1e-12)
    assert paired.temperature == pytest.approx(297.99, abs=0.01)
    assert any(p.endswith("scf.in") for p in paired.provenance["files"])
    # what the total energy needs: the UPF names, where pw.x read them, the density cutoff
    assert paired.attrs["pseudopotentials"] == {"Be": "Be.pbe-n-rrkjus_psl.1.0.0.UPF"}
    assert paired.attrs["ecutrho"] == 160.0 and paired.attrs["pseudo_dir"].endswith("Be2")
    (tmp_path / "scf.in").write_text((data / "scf.in").read_text().replace("0.0018874", "0.0100000"))
    other = malaflow.read_snapshot(tmp_path / "scf.out", reader="qe")
    assert other.temperature == pytest.approx(alone.temperature, rel=1e-12)
    # namelist forms pw.x accepts: a comment, several assignments on one indented line, a Fortran exponent
    text = (data / "scf.in").read_text().replace("   degauss          = 0.0018874\n", "")
    text = text.replace("   occupations      = 'smearing'", "  ! degauss = 0.0100000\n\t occupations='smearing', degauss=1.8874d-3,")
    (tmp_path / "scf.in").write_text(text)
    namelist = malaflow.read_snapshot(tmp_path / "scf.out", reader="qe")
    assert namelist.temperature == pytest.approx(paired.temperature, rel=1e-12)


def test_mala_arrays_must_fit_the_metadata_grid(be2_copy):
    """A cut LDOS or an info.json with another grid is refused naming both files; a
    subsample is accepted when declared."""
    ldos = np.load(be2_copy / "Be_snapshot1.out.npy")
    np.save(be2_copy / "Be_snapshot1.out.npy", ldos[:, :, :20])
    with pytest.raises(InputFileError, match=r"Be_snapshot1\.out\.npy: holds a 18×18×20 grid, but "
                                             r"Be_snapshot1\.info\.json says the DFT grid is 18×18×27"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot1.out.npy")
    assert malaflow.read_snapshot(be2_copy / "Be_snapshot1.out.npy", subsampled=True).attrs["subsampled"]
    info = json.loads((be2_copy / "Be_snapshot2.info.json").read_text())
    info["grid_dimensions"] = [18, 18, 28]
    (be2_copy / "Be_snapshot2.info.json").write_text(json.dumps(info))
    with pytest.raises(InputFileError, match=r"Be_snapshot2\.out\.npy: holds a 18×18×27 grid, but "
                                             r"Be_snapshot2\.info\.json says the DFT grid is 18×18×28"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot2.out.npy")


def test_qe_cubes_of_another_configuration_are_refused(be2_copy):
    """Cubes must hold the pw.x run's atoms: one moved by 0.3 Å, or another species, is
    another configuration — also through the xarray engine."""
    cube = be2_copy / "cubes" / "tmp.pp04Be_ldos.cube"
    lines = cube.read_text().split("\n")
    z, charge, x, y, zz = lines[6].split()
    lines[6] = f"    {z}    {charge}    {float(x) + 0.3 / 0.529177210903:.6f}    {y}    {zz}"
    cube.write_text("\n".join(lines))
    message = r"tmp\.pp04Be_ldos\.cube: atom 1 differs \(0\.3000 Å from its place in Be_snapshot0\.out\)"
    with pytest.raises(InputFileError, match=message):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")
    with pytest.raises(InputFileError, match=message):
        xr.open_dataset(be2_copy / "Be_snapshot0.out", engine="malaflow_qe", ldos="cubes/")
    lines[6] = f"    3    {charge}    {x}    {y}    {zz}"
    cube.write_text("\n".join(lines))
    with pytest.raises(InputFileError, match=r"atom 1 differs \(Z = 3, Be_snapshot0\.out Z = 4\)"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out", ldos="cubes/")


def test_mala_descriptor_parameters_named_in_the_info_json(be2_copy):
    info = json.loads((be2_copy / "Be_snapshot0.info.json").read_text())
    (be2_copy / "Be_snapshot0.info.json").write_text(json.dumps({**info, "descriptor_parameters": {"twojmax": 10}}))
    snap = malaflow.read_snapshot(be2_copy / "Be_snapshot0.out.npy")
    assert snap.descriptors["bispectrum"].attrs["params"] == {"twojmax": 10}
    assert "descriptor_parameters" not in snap.attrs
    (be2_copy / "Be_snapshot0.info.json").write_text(json.dumps({**info, "descriptor_parameters": "mala"}))
    with pytest.raises(InputFileError, match=r"Be_snapshot0\.info\.json: descriptor_parameters must be a mapping"):
        malaflow.read_snapshot(be2_copy / "Be_snapshot0.out.npy")


def test_qe_metadata_mala_records_too(mala_data):
    """ibrav and the electron count the eigenvalue occupations hold (MALA's
    additional-calculation-data fields): the qe reader's beside MALA's info.json of the
    same pw.x run (computed by MALA from the same eigenvalues)."""
    ours = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out")
    mala = malaflow.read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    assert ours.attrs["ibrav"] == mala.attrs["ibrav"] == 0
    # achieved 4e-11 electrons; 3.99997, not 4: the printed eigenvalues and the smearing
    assert ours.reference["n_electrons_from_eigenvalues"] == pytest.approx(
        mala.reference["n_electrons_from_eigenvalues"], abs=1e-9)
    assert abs(ours.reference["n_electrons_from_eigenvalues"] - 4.0) < 1e-4
