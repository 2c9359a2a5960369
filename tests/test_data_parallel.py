"""Data-parallel training (torch DDP over gloo) with replicas as Dask tasks: the same
batches and weights as one process, a lost worker named, the run resumed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import malaflow
from malaflow.cli import app
from malaflow.data import BatchLoader, Scaler, SnapshotPair
from malaflow.errors import MalaflowError, ParameterError

from conftest import training_config

distributed = pytest.importorskip("distributed")

SMALL = dict(early_stopping=0, descriptor={"plugin": "gaussian", "params": {}}, batch_size=64, checkpoint_every=1,
             model={"plugin": "feedforward", "params": {"layers": [32, 32]}})


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.mark.parametrize("cache_mb", [0.0, 1e3])
def test_replica_shards_make_up_the_single_process_batches(be2_catalog, cache_mb):
    """Each replica reads a disjoint set of blocks; together they give every batch of
    the single-process stream (streamed through a small shuffle buffer, and cached)."""
    pairs = [SnapshotPair.open(be2_catalog.store_path(f"be2-{i}"), "gaussian", "ldos") for i in (0, 1)]
    scalers = Scaler("standard", np.array([0.2]), np.array([3.0])), Scaler("none", np.zeros(11), np.ones(11))
    whole = list(BatchLoader(pairs, *scalers, 100, True, 2000, cache_mb, seed=5).epoch(3))
    for n in (2, 3):
        loaders = [BatchLoader(pairs, *scalers, 100, True, 2000, cache_mb, seed=5, rank=r, replicas=n) for r in range(n)]
        shards = [list(loader.shard_epoch(3)) for loader in loaders]
        assert all(len(s) == len(whole) for s in shards)
        for k, (x, y) in enumerate(whole):
            parts = [s[k] for s in shards]
            assert all(n_global == len(x) for *_, n_global in parts)
            np.testing.assert_array_equal(np.sort(np.concatenate([p[1] for p in parts]), axis=0), np.sort(y, axis=0))
            np.testing.assert_array_equal(np.sort(np.concatenate([p[0] for p in parts]), axis=0), np.sort(x, axis=0))
        reads: list[set] = []
        for r in range(n):  # the blocks each replica reads from the stores: disjoint, and all of them
            seen = set()
            original = SnapshotPair.read
            SnapshotPair.read = lambda pair, block, seen=seen: (seen.add((str(pair.store), str(block))),
                                                                original(pair, block))[1]
            try:
                list(BatchLoader(pairs, *scalers, 100, True, 2000, cache_mb, seed=5, rank=r, replicas=n).shard_epoch(4))
            finally:
                SnapshotPair.read = original
            reads.append(seen)
        assert sum(map(len, reads)) == len(set().union(*reads)) == 2 * len(pairs[0].blocks)


def test_two_replicas_train_to_the_weights_of_one_process(be2_catalog, tmp_path, client):
    one = malaflow.train(training_config(be2_catalog, tmp_path / "one", epochs=3, **SMALL), progress=False)
    two = malaflow.train(training_config(be2_catalog, tmp_path / "two", epochs=3, workers=2, **SMALL),
                         client=client, progress=False)
    a, b = (torch.load(p / "weights.pt", weights_only=True) for p in (one, two))
    for k in a:  # achieved 5.5e-7 (gradient sums in another order, through 3 epochs of Adam)
        assert float((a[k] - b[k]).abs().max() / a[k].abs().max()) < 5e-6, k
    histories = [json.loads((p / "history.json").read_text()) for p in (one, two)]
    for key in ("train_loss", "validation_loss"):  # achieved 3e-8 relative
        np.testing.assert_allclose([h[key] for h in histories[1]], [h[key] for h in histories[0]], rtol=3e-7)
    assert json.loads((two / "model.json").read_text())["metadata"]["epochs_done"] == 3


def test_a_lost_worker_is_named_and_the_run_resumes(be2_catalog, tmp_path, client):
    cfg = training_config(be2_catalog, tmp_path / "run", epochs=8, workers=2, **SMALL)
    outcome: dict = {}

    def run():
        try:
            malaflow.train(cfg, client=client, progress=False)
        except MalaflowError as exc:
            outcome["error"], outcome["at"] = exc, time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists()
    pids = client.run(os.getpid)
    victim = sorted(pids)[1]
    killed = time.monotonic()
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(90)
    assert "error" in outcome and outcome["at"] - killed < 60
    assert victim in str(outcome["error"]) and "resume" in str(outcome["error"])
    done = torch.load(checkpoint, weights_only=False)["state"]["epoch"]
    assert 1 <= done < 8
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    path = malaflow.train(cfg, client=client, progress=False)
    history = json.loads((path / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))


def test_settings_and_cli(be2_catalog, tmp_path, client, monkeypatch):
    for bad in (0, "two", 1.5):
        with pytest.raises(ParameterError, match="workers"):
            malaflow.TrainingConfig.load(training_config(be2_catalog, tmp_path / "x", workers=bad))
    monkeypatch.setattr("malaflow.data_parallel.WORKER_TIMEOUT_S", 1.0)
    with pytest.raises(MalaflowError, match="workers: 3 needs 3 Dask workers; the cluster has 2"):
        malaflow.train(training_config(be2_catalog, tmp_path / "x", workers=3, **SMALL), client=client)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(training_config(be2_catalog, tmp_path / "cli", epochs=2, **SMALL)))
    result = CliRunner().invoke(app, ["train", str(config), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "model.json").read_text())["metadata"]["config"]["workers"] == 2


def test_a_study_trial_trains_on_two_replicas(be2_catalog, tmp_path, client):
    training = training_config(be2_catalog, tmp_path / "unused", workers=2, **SMALL)
    config = dict(training=training, output=str(tmp_path / "study"), trials=1, report_every=2,
                  objective="ldos_loss", search={"learning_rate": {"choices": [1e-3]}, "epochs": {"choices": [4]}})
    with distributed.get_task_stream(client) as stream:
        result = malaflow.optimize(config, client=client, progress=False)
    replicas = [t for t in stream.data if "-replica-" in t["key"]]
    assert len(replicas) == 2 * 2 and len({t["worker"] for t in replicas}) == 2  # 2 segments × 2 replicas
    assert result.study.trials[0].state.name == "COMPLETE"
    assert malaflow.load_model(result.best_model).metadata["epochs_done"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs an NVIDIA GPU, two of them")
def test_two_gpu_replicas_over_nccl_train_to_the_single_gpu_weights(be2_catalog, tmp_path):
    pytest.importorskip("dask_cuda")
    settings = dict(epochs=3, device="cuda", **SMALL)
    with malaflow.cluster({"kind": "local-cuda", "workers": 1, "dashboard_address": None}) as one_gpu:
        one = malaflow.train(training_config(be2_catalog, tmp_path / "one", **settings), client=one_gpu)
    with malaflow.cluster({"kind": "local-cuda", "workers": 2, "dashboard_address": None}) as two_gpus:
        two = malaflow.train(training_config(be2_catalog, tmp_path / "two", workers=2, **settings), client=two_gpus)
    a, b = (torch.load(p / "weights.pt", weights_only=True) for p in (one, two))
    for k in a:  # the bound (the CPU/gloo run: 5.5e-7); not yet run on a GPU machine
        assert float((a[k] - b[k]).abs().max() / a[k].abs().max()) < 1e-5, k
