"""Shared fixtures: the reference data shipped in tests/data (a subset of MALA's test
data, see tests/data/mala-test-data/README.md), the large optional data in ../shared/data,
and the shipped demo data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import malaflow
from malaflow.catalog import Catalog

REPO = Path(__file__).resolve().parent.parent
MALA_DATA = REPO / "tests" / "data" / "mala-test-data"
SHARED_DATA = REPO.parent / "shared" / "data" / "mala-test-data"
DEMO_DATA = REPO / "malaflow" / "demo_data" / "Be2"
AL_PSEUDO = REPO / "malaflow" / "demo_data" / "Al"


@pytest.fixture(scope="session")
def mala_data() -> Path:
    """The part of MALA's test data (BSD-3) the tests need, shipped in the repository.
    Missing files are a failure, never a skip: without them the physics goes unchecked."""
    needed = ["Be2/Be_snapshot0.out", "Be2/Be_snapshot0.in.npy", "Be2/cubes/tmp.pp11Be_ldos.cube",
              "Be2/Be_snapshot3.out.npy", "Be2/Be_snapshot0.dos.npy", "Al36/Al.pw.scf.out", "Al36/Al_dos.npy"]
    missing = [f for f in needed if not (MALA_DATA / f).is_file()]
    if missing:
        pytest.fail(f"reference files missing from the repository: {missing} in {MALA_DATA}")
    return MALA_DATA


@pytest.fixture()
def shared_mala_data(request) -> Path:
    """The whole of MALA's test data beside the repository (../shared, as CI lays it out):
    large optional files (Al36 subsampled LDOS) that the repository does not ship. Only for
    tests marked ``shared_data``."""
    if request.node.get_closest_marker("shared_data") is None:
        pytest.fail(f"{request.node.nodeid} reads ../shared: mark it shared_data (optional large data)")
    if not SHARED_DATA.is_dir():
        pytest.skip(f"optional large reference data not found at {SHARED_DATA}")
    return SHARED_DATA


def mala_bispectrum(mala_data: Path, snapshot: int) -> tuple[np.ndarray | None, np.ndarray]:
    """MALA's bispectrum features of a Be2 snapshot: the whole grid for snapshot 0
    (``(None, (18, 18, 27, 91))``), 600 sampled points for 1–3 (``(flat indices, (600, 91))``)."""
    if snapshot == 0:
        return None, np.load(mala_data / "Be2" / "Be_snapshot0.in.npy")[..., 3:]
    samples = np.load(mala_data / "Be2" / "Be_snapshot123.in.samples.npz")
    return samples[f"index_{snapshot}"], samples[f"features_{snapshot}"]


def at_points(grid_values: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """``grid_values`` (x, y, z, feature) at the flat grid ``index`` (all when None)."""
    return grid_values if index is None else grid_values.reshape(-1, grid_values.shape[-1])[index]


@pytest.fixture()
def be2_copy(mala_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the Be2 reference folder (its links into the demo data resolved)."""
    dest = tmp_path / "Be2"
    shutil.copytree(mala_data / "Be2", dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dest.chmod(0o755)
    return dest


SPLITS = ["train", "train", "validation", "test"]


@pytest.fixture(scope="session")
def be2_catalog(tmp_path_factory) -> Catalog:
    """The shipped Be2 snapshots in stores chunked 9³, with bispectrum and gaussian
    descriptors computed once for the session."""
    root = tmp_path_factory.mktemp("be2")
    shutil.copytree(DEMO_DATA, root / "raw")
    cat = Catalog(root / "catalog.yaml")
    for i, split in enumerate(SPLITS):
        cat.add(root / "raw" / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split, chunks=9)
    stores = [cat.store_path(r.id) for r in cat.records]
    malaflow.compute_descriptors(stores, "bispectrum", chunks=9, progress=False)
    malaflow.compute_descriptors(stores, "gaussian", chunks=9, progress=False)
    return cat


def training_config(cat: Catalog, output: Path, **overrides) -> dict:
    """The settings of examples/train-be2.yaml on ``cat``, with ``overrides``."""
    base = dict(
        output=str(output), catalog=str(cat.path), descriptor={"plugin": "bispectrum", "params": {}},
        model={"plugin": "feedforward", "params": {"layers": [200]}}, epochs=100, batch_size=32,
        learning_rate=3e-4, early_stopping=20, checkpoint_every=10, seed=0,
    )
    return {**base, **overrides}


@pytest.fixture(scope="session")
def quantum_espresso():
    """pw.x and pp.x, installed from Debian's quantum-espresso package if missing (root)."""
    if shutil.which("pw.x") is None:
        install = subprocess.run(["apt-get", "install", "-y", "-q", "quantum-espresso"], capture_output=True, text=True) \
            if shutil.which("apt-get") else None
        if shutil.which("pw.x") is None:
            reason = "no apt-get" if install is None else (install.stderr.strip().splitlines() or ["?"])[-1]
            print(f"\nQuantum ESPRESSO is not available here: {reason}")
            pytest.skip(f"Quantum ESPRESSO is not available here: {reason}")


def be_config(tmp_path, supercell=(1, 1, 1), count=3, split="train", kpoints=(4, 4, 4), **qe_overrides):
    """A generation config for hcp Be cells at 298 K with cheap QE settings."""
    pseudo = DEMO_DATA
    return {
        "output": str(tmp_path / "generated"), "catalog": str(tmp_path / "catalog.yaml"),
        "dataset": f"be{2 * supercell[0] * supercell[1] * supercell[2]}", "split": split, "temperature": 298.0,
        "structures": {"bulk": {"name": "Be", "crystalstructure": "hcp", "a": 2.26, "c": 3.57},
                       "supercell": list(supercell), "count": count,
                       "seed": 7, "displacement": {"temperature": 298.0, "einstein_thz": 10.0}},
        "qe": {"pseudo_dir": str(pseudo), "pseudopotentials": {"Be": "Be.pbe-n-rrkjus_psl.1.0.0.UPF"},
               "ecutwfc": 30.0, "ecutrho": 120.0, "kpoints": list(kpoints), "conv_thr": 1e-8, **qe_overrides},
        "ldos": {"emin": -6.0, "emax": 12.0, "step": 0.1, "broadening": 0.15},
    }


# Skips the default run may have anywhere (the README lists them): large optional data
# and hardware this machine lacks. In CI (CI set) any other skip fails the run, so a
# reference test or an installable tool (QE, SLURM: CI runs as root) cannot go unseen.
ALLOWED_SKIPS = ("optional large reference data", "needs an NVIDIA GPU")
_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus) -> None:
    import os

    unexpected = [(test, why) for test, why in _skipped if not any(a in why for a in ALLOWED_SKIPS)]
    if os.environ.get("CI") and unexpected and exitstatus == 0:
        print("\nCI: these tests skipped, which only the README's list of optional skips may do:")
        for test, why in unexpected:
            print(f"  {test}: {why}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
