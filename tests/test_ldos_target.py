"""LDOS target physics against QE, MALA and exact integrals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array as da
import mpmath
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

import malaflow
from malaflow.errors import ParameterError
from malaflow.grid import voxel_volume
from malaflow.units import KB_EV
from malaflow.physics import dos as L
from malaflow.physics.fermi import (
    entropy_antiderivative, entropy_kernel, fermi_antiderivative, fermi_dirac, polylog_neg_exp,
)


# ------------------------------------------------------------------ special functions


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_polylog_matches_mpmath(s):
    y = np.array([0.0, 1e-6, 0.3, 0.999999, 1.0, 2.5, 30.0, 700.0])
    with mpmath.workdps(40):
        ref = [float(mpmath.polylog(s, -mpmath.exp(-mpmath.mpf(v)))) for v in y]
    np.testing.assert_allclose(polylog_neg_exp(s, y), ref, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("m", [0, 1, 2])
def test_fermi_antiderivatives_match_quadrature(m):
    for x in (-60.0, -3.0, -0.5, 0.0, 0.7, 5.0, 60.0):
        ref = quad(lambda t: t**m * fermi_dirac(t, 0.0, 1.0), 0, x, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
        assert fermi_antiderivative(m, np.array([x]))[0] == pytest.approx(ref, rel=1e-11, abs=1e-12)
        if m < 2:
            ref = quad(lambda t: t**m * entropy_kernel(t, 0.0, 1.0), 0, x, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
            assert entropy_antiderivative(m, np.array([x]))[0] == pytest.approx(ref, rel=1e-11, abs=1e-12)


def test_no_overflow_far_from_the_fermi_level():
    x = np.array([-5000.0, 5000.0])
    assert np.all(np.isfinite(fermi_antiderivative(2, x))) and np.all(np.isfinite(entropy_antiderivative(1, x)))
    assert fermi_antiderivative(0, x)[0] == pytest.approx(-5000 + np.log(2))  # ∫₀^{-X} 1 dt + tail η(1)


# ------------------------------------------------------------------ reference data


def test_al36_dos_against_qe(mala_data):
    """Al36 DOS from QE's dos.x; QE's Fermi level and band energy from the pw.x output.

    Ours are −3.19 meV and −0.1507 eV from QE (dos.x's 0.1 eV grid); MALA 1.4.0's
    DOS.from_numpy_file on the same file (run here) gives E_F 7.529509770031926 and
    E_band 323.32260058441227 eV, which ours equal to 1.7e-12 and 2.7e-10 eV.
    """
    qe = malaflow.read_snapshot(mala_data / "Al36" / "Al.pw.scf.out")
    dos = np.load(mala_data / "Al36" / "Al_dos.npy")
    e = -10 + 0.1 * np.arange(len(dos))
    mu = L.fermi_level(dos, e, qe.temperature, qe.n_electrons, "analytic")
    band = L.band_energy(dos, e, mu, qe.temperature, "analytic")
    assert mu - 7.5327 == pytest.approx(-3.19e-3, abs=5e-5)  # pw.x prints 4 decimals
    assert band - qe.reference["band_energy"] == pytest.approx(-0.1507, abs=5e-4)
    assert mu == pytest.approx(7.529509770031926, abs=2e-11)
    assert band == pytest.approx(323.32260058441227, abs=3e-9)
    assert qe.reference["band_energy"] == pytest.approx(323.4733, abs=1e-3)


# MALA 1.4.0's analytic post-processing of the Be2 LDOS (LDOS.from_numpy_file, with the
# pw.x output for T and N; mpmath polylogarithms), run on this machine: E_F, E_band, −TS (eV)
MALA_BE2 = {
    0: (10.240735437299623, 12.447077138958338, -0.0006551579581015896),
    1: (10.149207154844252, 12.279480141239908, -0.0006617246962736207),
    2: (10.22529601434891, 12.417710872861253, -0.0006561152508902738),
    3: (10.228526936788498, 12.424254288595495, -0.0006559579698050969),
}


@pytest.mark.parametrize("i", range(4))
def test_be2_observables_match_mala(mala_data, i):
    """Fermi level, band energy and entropy term as MALA's: 2.4e-11, 2.2e-10 and 4.5e-10 eV
    measured (MALA's mpmath polylogarithms vs our closed forms)."""
    snap = malaflow.read_snapshot(mala_data / "Be2" / f"Be_snapshot{i}.out.npy")
    obs = malaflow.observables(snap.to_dataset())
    fermi, band, entropy = MALA_BE2[i]
    assert obs.fermi_energy == pytest.approx(fermi, abs=2.5e-10)
    assert obs.band_energy == pytest.approx(band, abs=2.5e-9)
    assert obs.entropy_contribution == pytest.approx(entropy, abs=5e-9)


def test_be2_snapshot0_density_against_qe(mala_data):
    """The density of this LDOS against QE's own density (pp.x of the same run): the
    11-point LDOS limits the agreement to a relative L1 difference of 0.05600 (measured;
    MALA's density of it equals ours to 9e-13)."""
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy")
    obs = malaflow.observables(snap.to_dataset(), scheme="analytic")
    ref = np.load(mala_data / "Be2" / "Be_snapshot0.dens.npy")[..., 0]
    n = L.density(snap.to_dataset().ldos.astype(np.float64), obs.fermi_energy, snap.temperature).values
    assert np.abs(n - ref).sum() / np.abs(ref).sum() == pytest.approx(0.05600, abs=5e-5)


# ------------------------------------------------------------------ properties


energy_grids = st.tuples(st.floats(-10, 0), st.floats(0.05, 1.0), st.integers(5, 60))


@settings(max_examples=40, deadline=None)
@given(grid=energy_grids, seed=st.integers(0, 2**31), temperature=st.floats(50, 5000),
       fill=st.floats(0.05, 0.95), scheme=st.sampled_from(L.SCHEMES))
def test_random_ldos_properties(grid, seed, temperature, fill, scheme):
    emin, step, n = grid
    e = emin + step * np.arange(n)
    rng = np.random.default_rng(seed)
    ldos = xr.DataArray(rng.random((3, 2, 4, n)) + 1e-3, dims=("x", "y", "z", "energy"), coords={"energy": e})
    cell = np.diag([2.0, 3.0, 1.5])
    dos = L.density_of_states(ldos, cell).values
    mus = np.linspace(e[0] - 1, e[-1] + 1, 25)
    counts = [L.electron_count(dos, e, mu, temperature, scheme) for mu in mus]
    assert np.all(np.diff(counts) > -1e-12 * max(counts))
    total = L.electron_count(dos, e, e[-1] + 50, temperature, scheme)
    n_e = fill * total
    mu = L.fermi_level(dos, e, temperature, n_e, scheme)
    assert abs(L.electron_count(dos, e, mu, temperature, scheme) - n_e) < 1e-8 * n_e
    density = L.density(ldos, mu, temperature, scheme)
    assert float(density.sum()) * voxel_volume(cell, (3, 2, 4)) == pytest.approx(n_e, rel=1e-10)


def test_schemes_converge_to_the_exact_integrals():
    """A smooth DOS (zero at the window ends): both schemes → the exact integrals as h → 0."""
    T, mu = 1000.0, 1.3
    kt = KB_EV * T
    D = lambda eps: 2.0 * np.exp(-0.5 * ((eps - 1.0) / 1.2) ** 2)  # noqa: E731
    exact_n = quad(lambda x: D(x) * fermi_dirac(x, mu, kt), -9, 11, points=[mu], limit=400, epsabs=1e-13)[0]
    exact_b = quad(lambda x: x * D(x) * fermi_dirac(x, mu, kt), -9, 11, points=[mu], limit=400, epsabs=1e-13)[0]
    errors = {s: [] for s in L.SCHEMES}
    for h in (0.4, 0.1, 0.025):
        e = np.arange(-9, 11 + h / 2, h)
        for s in L.SCHEMES:
            errors[s].append((abs(L.electron_count(D(e), e, mu, T, s) - exact_n), abs(L.band_energy(D(e), e, mu, T, s) - exact_b)))
    for s, errs in errors.items():
        errs = np.array(errs)
        assert np.all(errs[1:] < errs[:-1] / 8), (s, errs)  # second order: ×16 per halving twice
        assert np.all(errs[-1] < 2e-4), (s, errs)
    # The analytic scheme is exact for the Fermi function: far better on coarse grids.
    assert errors["analytic"][0][0] < errors["quadrature"][0][0] / 5


# ------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_error():
    e = np.linspace(-5, 5, 11)
    dos = np.ones(11)
    with pytest.raises(ParameterError, match="positive number of kelvin, got -5"):
        L.fermi_level(dos, e, -5.0, 4.0)
    with pytest.raises(ParameterError, match="uniform energy grid"):
        L.electron_count(dos, np.r_[e[:5], e[5:] + 0.3], 0.0, 300.0, "analytic")
    assert L.electron_count(dos, np.r_[e[:5], e[5:] + 0.3], 0.0, 300.0, "quadrature") > 0
    with pytest.raises(ParameterError, match=r"20(\.0)? electrons cannot be placed: the DOS holds between 0 and 11"):
        L.fermi_level(dos, e, 300.0, 20.0)
    with pytest.raises(ParameterError, match="cannot be placed"):
        L.fermi_level(dos, e, 300.0, -1.0)
    with pytest.raises(ParameterError, match="NaN"):
        L.fermi_level(np.r_[dos[:-1], np.nan], e, 300.0, 4.0)
    with pytest.raises(ParameterError, match="unknown integration scheme 'simpson'"):
        L.electron_count(dos, e, 0.0, 300.0, "simpson")


def test_nan_in_ldos_is_caught_by_observables(mala_data):
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot1.out.npy")
    snap.ldos = snap.ldos.copy()
    snap.ldos[1, 2, 3, 4] = np.nan
    with pytest.raises(ParameterError, match="LDOS contains NaN"):
        malaflow.observables(snap.to_dataset())


# ------------------------------------------------------------------ chunk-wise, bounded memory


def test_large_lazy_ldos_reduces_in_bounded_memory():
    """256³×64 float32 (4.3 GB) reduced to its DOS in chunks of 64³×64 (67 MB): the
    reduction raises the peak RSS by a few chunks, never by the array (77 MB measured)."""
    script = Path(__file__).with_name("lazy_ldos_memory.py")
    out = subprocess.run([sys.executable, str(script), "256", "64", "64"], capture_output=True, text=True, check=True)
    error, raised_mb = map(float, out.stdout.split())
    assert error < 2.5e-7  # float32 summands, float64 accumulation: 2.4e-8 measured
    chunk_mb = 64**3 * 64 * 4 / 2**20
    assert raised_mb < 3 * chunk_mb, f"peak RSS raised by {raised_mb:.0f} MB for a 4300 MB LDOS"


def test_density_is_lazy_and_written_chunkwise(tmp_path, mala_data):
    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy")
    path = malaflow.write_snapshot(snap, tmp_path / "be.zarr", chunks=6)
    ds = malaflow.open_snapshot(path)
    obs = malaflow.observables(ds)
    n = L.density(ds.ldos, obs.fermi_energy, snap.temperature)
    assert isinstance(n.data, da.Array) and n.data.chunksize == (6, 6, 6)
    n.to_dataset(name="density").to_zarr(tmp_path / "n.zarr", zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "n.zarr", consolidated=False).density
    assert back.encoding["chunks"] == (6, 6, 6)
    assert float(back.sum()) * voxel_volume(snap.cell, snap.grid_shape) == pytest.approx(4.0, abs=1e-5)


# ------------------------------------------------------------------ CLI and plots


def test_cli_observables_and_plots(tmp_path, mala_data):
    from typer.testing import CliRunner

    from malaflow.cli import app

    snap = malaflow.read_snapshot(mala_data / "Be2" / "Be_snapshot0.out.npy")
    store = str(malaflow.write_snapshot(snap, tmp_path / "be0.zarr"))
    out = CliRunner().invoke(app, ["observables", store])
    assert out.exit_code == 0, out.output
    row = next(l for l in out.output.splitlines() if l.startswith("band energy")).split()
    ours, dft, diff = map(float, row[-3:])
    assert ours == pytest.approx(12.4471, abs=5e-5)  # MALA's analytic value (4 decimals)
    assert dft == pytest.approx(12.076588252980926) and diff == pytest.approx(ours - dft)
    import matplotlib

    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # as a notebook has its own: plotting must not switch it
    try:
        for kind in ("dos", "density"):
            png = tmp_path / f"{kind}.png"
            out = CliRunner().invoke(app, ["plot", kind, store, "-o", str(png)])
            assert out.exit_code == 0, out.output
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend)
    for args, message in ((["--axis", "w"], "normal axis is x, y or z, got 'w'"),
                          (["--index", "99"], "plane index 99 is outside the grid: z runs from 0 to 26")):
        out = CliRunner().invoke(app, ["plot", "density", store, "-o", str(tmp_path / "bad.png"), *args])
        assert out.exit_code != 0 and message in str(out.exception) and not (tmp_path / "bad.png").exists()


def test_dos_target_stands_alone(mala_data):
    """The `dos` target works on a dataset holding only a DOS (QE's dos.x output for Al36)."""
    qe = malaflow.read_snapshot(mala_data / "Al36" / "Al.pw.scf.out")
    dos = np.load(mala_data / "Al36" / "Al_dos.npy")
    ds = xr.Dataset({"dos": ("energy", dos)}, coords={"energy": -10 + 0.1 * np.arange(len(dos))},
                    attrs={"temperature": qe.temperature, "n_electrons": qe.n_electrons})
    obs = malaflow.observables(ds, target="dos")
    assert obs.fermi_energy == pytest.approx(7.529509770031926, abs=2e-11)  # MALA's, as above
    assert {p.name for p in malaflow.list_plugins("targets")} >= {"dos", "ldos"}
