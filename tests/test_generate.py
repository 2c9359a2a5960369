"""Data generation with Quantum ESPRESSO (pw.x, pp.x): configurations → stores + catalog."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

import malaflow
from malaflow.errors import ParameterError
from malaflow.generate import configurations, generate

from conftest import be_config

pytestmark = pytest.mark.qe


def test_thermal_displacements_follow_the_einstein_model():
    """σ² = k_B T / (M ω²) per direction: Be (9.0122 u) at 298 K with ω = 2π·10 THz."""
    from scipy import constants as c

    sigma = (c.k * 298.0 / (9.0122 * c.atomic_mass * (2 * c.pi * 10e12) ** 2)) ** 0.5 / c.angstrom  # 0.0834 Å
    spec = {"bulk": {"name": "Be", "crystalstructure": "hcp", "a": 2.26, "c": 3.57}, "supercell": [4, 4, 4],
            "count": 20, "seed": 3, "displacement": {"temperature": 298.0, "einstein_thz": 10.0}}
    frames = configurations(spec)
    ideal = configurations({**spec, "displacement": {}})[0]
    import numpy as np

    shifts = np.concatenate([f.positions - ideal.positions for f in frames])
    assert shifts.std() == pytest.approx(sigma, rel=0.03)  # 7680 samples: ~1 % statistical error
    assert np.array_equal(configurations(spec)[5].positions, frames[5].positions)  # the seed reproduces


def test_split_counts_must_cover_the_configurations(tmp_path):
    with pytest.raises(ParameterError, match=r"split counts \{'train': 2, 'validation': 2\} .* the 3 configurations"):
        generate(be_config(tmp_path, count=3, split={"train": 2, "validation": 2}), progress=False)
    assert not (tmp_path / "catalog.yaml").exists()


def test_generate_ingest_rerun_and_failure(quantum_espresso, tmp_path, monkeypatch):
    config = be_config(tmp_path)
    result = generate(config, progress=False)
    assert len(result["done"]) == 3 and not result["failed"]
    cat = malaflow.Catalog.load(tmp_path / "catalog.yaml")
    for record in cat.records:
        ds = cat.open(record.id)
        obs = malaflow.observables(ds)
        d_fermi = obs.fermi_energy - ds.attrs["fermi_energy"]
        d_band = obs.band_energy - ds.attrs["reference"]["band_energy"]
        print(f"\n  {record.id}: LDOS vs pw.x: Fermi {1e3 * d_fermi:+.2f} meV, band {1e3 * d_band:+.2f} meV")
        # the LDOS's 0.15 eV broadening and 0.1 eV steps against pw.x's eigenvalues:
        # Fermi +21…+31 meV, band −14…−15 meV measured
        assert abs(d_fermi) < 0.060 and abs(d_band) < 0.050  # eV
        assert ds.ldos.shape[-1] == 181 and ds.attrs["ldos_broadening"] == pytest.approx(0.15)
        # pp.x broadened with the run's smearing (QE 6.7 has no use_gauss_ldos): the LDOS summed
        # over the grid is the eigenvalues' DOS with −∂f/∂ε of width 0.15 eV (2e-5 of the peak
        # measured), not with a Gaussian (0.24 of the peak)
        assert ds.attrs["ldos_broadening_kind"] == "fermi-dirac"
        from_ldos = malaflow.get_target("ldos").dos(ds).values
        for kernel, bound in (("fermi-dirac", lambda d: d < 2e-4), ("gaussian", lambda d: d > 0.05)):
            eig = malaflow.eigenvalue_dos(ds.eigenvalues, ds.k_weights, ds.energy, 0.15, kernel)
            assert bound(np.abs(from_ldos - eig).max() / eig.max()), kernel
        assert record.raw and all((cat.root / p).is_file() for p in record.raw)
    assert not (tmp_path / "generated" / "scratch").exists() or not any((tmp_path / "generated" / "scratch").iterdir())

    again = generate(config, progress=False)
    assert again["done"] == [] and sorted(again["skipped"]) == sorted(result["done"])

    # runs stopped after a cell's DFT finished but before its record (its files still in
    # scratch/, or already in raw/): the next run records them without running DFT again
    lost = sorted(result["done"][:2])
    doc = yaml.safe_load((tmp_path / "catalog.yaml").read_text())
    doc["snapshots"] = [r for r in doc["snapshots"] if r["id"] not in lost]
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(doc))
    for id in lost:
        shutil.rmtree(cat.store_path(id))
    (tmp_path / "generated" / "scratch").mkdir(exist_ok=True)
    shutil.move(tmp_path / "generated" / "raw" / lost[0], tmp_path / "generated" / "scratch" / lost[0])
    monkeypatch.setattr("malaflow.generate.run_qe", lambda *a: pytest.fail("DFT ran again"))
    recovered = generate(config, progress=False)
    assert sorted(recovered["done"]) == lost and len(malaflow.Catalog.load(tmp_path / "catalog.yaml").records) == 3
    assert not (tmp_path / "generated" / "scratch" / lost[0]).exists()
    monkeypatch.undo()

    impossible = be_config(tmp_path, conv_thr=1e-14, electron_maxstep=1)
    bad = generate(impossible, progress=False)
    assert len(bad["failed"]) == 3 and bad["done"] == []
    failed = yaml.safe_load((tmp_path / "catalog.yaml").read_text())["failed"]
    reason = failed[bad["failed"][0]]
    assert "did not converge" in reason["reason"] and (tmp_path / "generated" / "scratch").is_dir()
    assert len(malaflow.Catalog.load(tmp_path / "catalog.yaml").records) == 3  # nothing failed was ingested


def test_a_missing_pseudopotential_stops_before_anything_is_written(tmp_path):
    """No pseudopotential file: one message, exit code non-zero, no output folder or catalog.
    Configurations that fail on their own are recorded, and the exit code says so."""
    from typer.testing import CliRunner

    from malaflow.cli import app

    config = be_config(tmp_path / "new", count=1)
    config["qe"]["pseudopotentials"] = {"Be": "Be.missing.UPF"}
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["generate", str(path)])
    assert result.exit_code != 0 and "the pseudopotential of Be, Be.missing.UPF, is not in pseudo_dir" in str(
        result.exception)
    assert not (tmp_path / "new").exists()
    config["qe"]["pseudopotentials"] = {"Al": "../Al/Al.pbe-n-rrkjus_psl.1.0.0.UPF"}  # none for Be
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["generate", str(path)])
    assert result.exit_code == 1 and "failed: 1" in result.output and "done: 0" in result.output
