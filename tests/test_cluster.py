"""Clusters from configs, surviving a lost worker, resuming an interrupted computation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import malaflow
from malaflow.runtime import load_config, make_cluster
from malaflow.descriptor_store import interrupted_descriptors
from malaflow.errors import ParameterError


def big_store(path, n=72):
    """A 2-atom cell on an n³ grid: enough chunks to interrupt a run in the middle."""
    snap = malaflow.Snapshot(positions=[[0.1, 0.2, 0.3], [1.6, 1.5, 1.9]], numbers=[4, 4],
                             cell=np.diag([3.2, 3.0, 3.4]), grid_shape=(n, n, n), temperature=300.0,
                             n_electrons=4.0)
    return malaflow.write_snapshot(snap, path)


def test_config_checks_and_slurm_job_script(tmp_path):
    assert load_config(None) == {"kind": "local"}
    with pytest.raises(ParameterError, match="unknown key.*cpus"):
        load_config({"kind": "slurm", "cpus": 4})
    with pytest.raises(ParameterError, match="kind must be one of"):
        load_config({"kind": "kubernetes"})
    for bad, message in [({"workers": -2}, r"workers must be a whole number ≥ 1, got -2"),
                         ({"workers": 2.5}, r"workers must be a whole number"),
                         ({"threads_per_worker": 0}, r"threads_per_worker must be a whole number ≥ 1"),
                         ({"gpus_per_worker": -1}, r"gpus_per_worker must be a number ≥ 0"),
                         ({"kind": "slurm", "jobs": -1}, r"jobs must be a whole number ≥ 0"),
                         ({"kind": "slurm", "adaptive": {"minimum": 2, "maximum": 1}}, r"adaptive.maximum .* ≥ 2")]:
        with pytest.raises(ParameterError, match=message):
            load_config(bad)  # refused at once, before any worker is started
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster:\n  kind: slurm\n  jobs: 0\n  cores: 4\n  processes: 2\n  memory: 8GB\n"
                      "  walltime: '01:00:00'\n  queue: gpu\n  gpus_per_worker: 1\n")
    cluster = make_cluster(load_config(config))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p gpu" in script and "--gres=gpu:2" in script and "--resources GPU=1" in script
    assert "--nworkers 2" in script or "--nprocs 2" in script


def test_a_cluster_without_workers_is_an_error_not_a_hang(monkeypatch):
    """Tasks sent to a scheduler no worker joins fail after the bounded wait, with a message."""
    import distributed

    from malaflow import runtime

    monkeypatch.setattr(runtime, "WORKER_TIMEOUT_S", 2.0)
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as empty, distributed.Client(empty) as client:
        with pytest.raises(malaflow.MalaflowError, match=r"no Dask worker joined the cluster .* in 2 s"):
            runtime.run_tasks([(abs, (-1,))], client, progress=False)


def test_local_gpu_workers_get_the_resource():
    with malaflow.cluster({"kind": "local", "workers": 1, "threads_per_worker": 1, "gpus_per_worker": 1,
                           "dashboard_address": None}) as client:
        [worker] = client.scheduler_info()["workers"].values()
        assert worker["resources"] == {"GPU": 1.0}


def test_a_multi_gpu_machine_is_a_local_cuda_cluster(monkeypatch):
    """dask-cuda's LocalCUDACluster with one GPU per worker (its GPU run: scripts/gpu-check.sh)."""
    assert load_config({"kind": "local-cuda", "devices": "0,1"})["devices"] == "0,1"
    with pytest.raises(ParameterError, match="unknown key.*cores"):
        load_config({"kind": "local-cuda", "cores": 4})
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # as where it is not installed
    with pytest.raises(malaflow.MalaflowError, match="kind: local-cuda needs dask-cuda"):
        make_cluster(load_config({"kind": "local-cuda"}))


def test_losing_a_worker_mid_computation_changes_nothing(tmp_path):
    """Two worker processes; one is killed (SIGKILL, by pid) while chunks are being
    computed and written. Its tasks run again elsewhere; the stored array equals an
    undisturbed run bit for bit, with every chunk present."""
    distributed = pytest.importorskip("distributed")
    reference = malaflow.compute_descriptors(big_store(tmp_path / "a.zarr"), "gaussian", chunks=8,
                                             progress=False).values
    store = big_store(tmp_path / "b.zarr")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
            result = {}
            run = threading.Thread(target=lambda: result.update(
                a=malaflow.compute_descriptors(store, "gaussian", chunks=8, client=client, progress=False)))
            run.start()
            victim_dir = store / "descriptors" / ".partial-gaussian" / "gaussian" / "c"
            deadline = time.time() + 60
            while time.time() < deadline and not (victim_dir.exists() and sum(1 for _ in victim_dir.rglob("0")) > 20):
                time.sleep(0.05)
            os.kill(list(pids.values())[0], signal.SIGKILL)
            run.join(timeout=300)
    assert "a" in result, "the computation did not complete"
    assert interrupted_descriptors(store) == {}
    np.testing.assert_array_equal(result["a"].values, reference)


def test_interrupted_cli_run_reports_missing_chunks_and_resumes(tmp_path):
    store = big_store(tmp_path / "s.zarr", n=96)
    command = [sys.executable, "-m", "malaflow.cli", "descriptors", "compute", str(store),
               "-p", "gaussian", "--chunks", "8"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunk_dir = store / "descriptors" / ".partial-gaussian" / "gaussian" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and not (chunk_dir.exists() and sum(1 for _ in chunk_dir.rglob("0")) > 30):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    [(name, (done, total))] = interrupted_descriptors(store).items()
    assert name == "gaussian" and total == 12**3 and 0 < done < total
    info = subprocess.run([sys.executable, "-m", "malaflow.cli", "info", str(store)], capture_output=True, text=True)
    assert f"{done} of {total} chunks written" in info.stdout
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{total - done} of {total} chunks left" in again.stderr
    assert interrupted_descriptors(store) == {}
    fresh = malaflow.compute_descriptors(big_store(tmp_path / "t.zarr", n=96), "gaussian", chunks=8, progress=False)
    np.testing.assert_array_equal(malaflow.open_descriptors(store, "gaussian").values, fresh.values)


def test_losing_a_worker_mid_prediction_changes_nothing(tmp_path):
    """A prediction written chunk by chunk to Zarr over two workers, one killed midway:
    the stored LDOS equals the undisturbed prediction bit for bit."""
    distributed = pytest.importorskip("distributed")
    from malaflow.catalog import Catalog

    from conftest import DEMO_DATA

    cat = Catalog(tmp_path / "catalog.yaml")
    for i, split in enumerate(["train", "train", "validation", "test"]):
        cat.add(DEMO_DATA / f"Be_snapshot{i}.info.json", id=f"be2-{i}", split=split, chunks=9)
    model = malaflow.load_model(malaflow.train(dict(
        output=str(tmp_path / "model"), catalog=str(cat.path), epochs=2, descriptor={"plugin": "gaussian"},
        model={"plugin": "feedforward", "params": {"layers": [16]}}), progress=False))
    atoms = malaflow.Snapshot.from_dataset(malaflow.open_snapshot(cat.store_path("be2-3"))).atoms.repeat((4, 4, 3))
    reference = model.predict(atoms, chunks=16).ldos.values
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            predicted = model.predict(atoms, chunks=16)
            run = threading.Thread(target=lambda: malaflow.write_snapshot(predicted, tmp_path / "p.zarr", chunks=16))
            run.start()
            deadline = time.time() + 120
            while time.time() < deadline and sum(1 for _ in tmp_path.glob(".malaflow-tmp-p.zarr-*/ldos/c/**/0")) < 10:
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)
            run.join(timeout=300)
    stored = malaflow.open_snapshot(tmp_path / "p.zarr").ldos.values
    np.testing.assert_array_equal(stored, reference.astype(stored.dtype))


def test_cli_cluster_option(tmp_path):
    from typer.testing import CliRunner

    from malaflow.cli import app

    store = big_store(tmp_path / "s.zarr", n=16)
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster:\n  kind: local\n  workers: 1\n  threads_per_worker: 1\n")
    result = CliRunner().invoke(app, ["descriptors", "compute", str(store), "-p", "gaussian", "--cluster", str(config)])
    assert result.exit_code == 0, result.output
    assert "Dask dashboard: http" in result.output and "descriptors/gaussian (16, 16, 16, 1) written" in result.output
    # at a shell: the dashboard line, not Dask's own INFO log (that with -v)
    quiet = subprocess.run([sys.executable, "-m", "malaflow.cli", "descriptors", "compute", str(store), "-p", "gaussian",
                            "--cluster", str(config)], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "Dask dashboard: http" in quiet.stderr and "INFO distributed" not in quiet.stderr, quiet.stderr
