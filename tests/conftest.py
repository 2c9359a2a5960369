"""Shared fixtures: the reference data in ../shared/data and the shipped demo data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "mala-test-data"
DEMO_DATA = REPO / "malaflow" / "demo_data" / "Be2"


@pytest.fixture(scope="session")
def mala_data() -> Path:
    """MALA's test data (BSD-3) beside the repository, as CI lays it out."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (CI puts ../shared beside the clone)")
    return SHARED_DATA


@pytest.fixture()
def be2_copy(mala_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the Be2 folder (the shared one is read-only)."""
    dest = tmp_path / "Be2"
    shutil.copytree(mala_data / "Be2", dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dest.chmod(0o755)
    return dest
