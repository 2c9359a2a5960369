"""A real SLURM cluster (single node, started by scripts/slurm-local.sh): descriptor
computation of the demo data as SLURM jobs, bit for bit equal to the local run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import malaflow

from conftest import DEMO_DATA, REPO

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([str(REPO / "scripts" / "slurm-local.sh"), "start", str(state)],
                           capture_output=True, text=True)
    if start.returncode != 0:
        reason = (start.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"\nSLURM could not start here: {reason}")
        pytest.skip(f"SLURM could not start here: {reason}")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    yield state
    subprocess.run([str(REPO / "scripts" / "slurm-local.sh"), "stop", str(state)], capture_output=True)
    os.environ.pop("SLURM_CONF", None)


def test_descriptors_as_slurm_jobs(slurm, tmp_path):
    snaps = [malaflow.read_snapshot(DEMO_DATA / f"Be_snapshot{i}.info.json") for i in range(2)]
    stores = [malaflow.write_snapshot(s, tmp_path / f"s{i}.zarr") for i, s in enumerate(snaps)]
    local = malaflow.compute_descriptors(snaps, "gaussian", chunks=9, progress=False)
    local_b = malaflow.compute_descriptors(snaps, "bispectrum", params={"twojmax": 4}, progress=False)
    config = {"kind": "slurm", "jobs": 2, "cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00",
              "queue": "debug", "python": sys.executable, "log_directory": str(tmp_path / "logs"),
              "local_directory": str(tmp_path / "work")}
    with malaflow.cluster(config) as client:
        try:
            client.wait_for_workers(2, timeout=300)
        except Exception:
            queue = subprocess.run(["squeue", "-o", "%i %j %T %R"], capture_output=True, text=True).stdout
            node = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True).stdout
            raise AssertionError(f"SLURM workers did not all start.\nsqueue:\n{queue}\nnode:\n{node}") from None
        jobs = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True).stdout
        assert jobs.count("RUNNING") >= 2, jobs
        stored = malaflow.compute_descriptors(stores, "gaussian", chunks=9, client=client, progress=False, dtype=None)
        stored_b = malaflow.compute_descriptors(stores, "bispectrum", params={"twojmax": 4}, client=client,
                                                progress=False, dtype=None)
    for a, b in zip(stored + stored_b, local + local_b):
        np.testing.assert_array_equal(a.values, b.values)


def test_training_replicas_as_slurm_jobs(slurm, tmp_path, be2_catalog):
    """workers: 2 on two SLURM jobs trains to the weights of the same run on a LocalCluster."""
    import torch

    from conftest import training_config

    settings = dict(epochs=3, workers=2, early_stopping=0, batch_size=64, descriptor={"plugin": "gaussian", "params": {}},
                    model={"plugin": "feedforward", "params": {"layers": [32, 32]}})
    with malaflow.cluster({"kind": "local", "workers": 2, "threads_per_worker": 1}) as client:
        local = malaflow.train(training_config(be2_catalog, tmp_path / "local", **settings), client=client,
                               progress=False)
    config = {"kind": "slurm", "jobs": 2, "cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00",
              "queue": "debug", "python": sys.executable, "log_directory": str(tmp_path / "logs"),
              "local_directory": str(tmp_path / "work")}
    with malaflow.cluster(config, wait_for_workers=2) as client:
        jobs = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True).stdout
        assert jobs.count("RUNNING") >= 2, jobs
        on_slurm = malaflow.train(training_config(be2_catalog, tmp_path / "slurm", **settings), client=client,
                                  progress=False)
    a, b = (torch.load(p / "weights.pt", weights_only=True) for p in (local, on_slurm))
    for k in a:  # the same replicas, the same reduction order: bit for bit
        assert torch.equal(b[k], a[k]), k
