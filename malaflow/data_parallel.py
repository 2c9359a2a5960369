"""Data-parallel training: N replicas of one run as N Dask tasks, one per worker.

The replicas join one torch process group (gloo on CPU, NCCL on GPU). Replica 0 opens
the rendezvous (a ``TCPStore`` on its worker's host, on a free port) and tells the
others where it is through a Dask ``Variable`` — so nothing needs a port agreed in
advance and the address is that of a worker the scheduler already reaches. Each replica
reads its own shard of the training blocks (:class:`malaflow.data.BatchLoader`), DDP
averages the gradients, losses are summed across replicas, and replica 0 alone writes
checkpoints and the model.

The client watches the replicas: a worker that leaves the cluster (killed, out of
memory, its batch job ended) ends the run with a message naming it; the others fail in
their next collective call (the dead peer's sockets close) or after ``MALAFLOW_REPLICA_TIMEOUT``
seconds. Training the same config again resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from tqdm.auto import tqdm

from .errors import MalaflowError
from .runtime import WORKER_TIMEOUT_S

log = logging.getLogger(__name__)

REPLICA_TIMEOUT_S = float(os.environ.get("MALAFLOW_REPLICA_TIMEOUT", 300))


@dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel run (rank 0 of 1: a plain run)."""

    rank: int = 0
    size: int = 1
    device: str = "cpu"
    progress_key: str | None = None  # Dask Variable replica 0 reports finished epochs to

    @property
    def writes(self) -> bool:
        """Checkpoints, history and the model come from one replica."""
        return self.rank == 0

    def wrap(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training forward pass goes through: DDP when there are peers."""
        if self.size == 1:
            return network
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the replicas (every replica gets the same numbers)."""
        if self.size == 1:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def report(self, row: dict[str, Any]) -> None:
        """Tell the client an epoch is done (for its progress bar)."""
        if self.writes and self.progress_key is not None:
            from distributed import Variable

            Variable(self.progress_key).set(row)


SOLO = Replica()  # a run in one process


def train_parallel(config: Any, client: Any, resume: bool, max_epochs: int | None, progress: bool) -> Path:
    """Train ``config`` with ``config.workers`` replicas on the client's workers."""
    from .compute import compute_descriptors
    from .descriptors import get_descriptor
    from .runtime import task_resources
    from .training import selected_snapshots

    n = config.workers
    # descriptors once, on the whole cluster, before the replicas read them
    descriptor = get_descriptor(config.descriptor["plugin"], config.descriptor.get("params") or {})
    compute_descriptors(list(selected_snapshots(config).stores.values()), descriptor, client=client, progress=progress)
    resources = task_resources(client, {"GPU": 1})
    workers = _pick_workers(client, n, resources)
    key = f"malaflow-train-{uuid.uuid4().hex}"
    futures = [
        client.submit(run_replica, config, rank, n, key, resume, max_epochs, pure=False, workers=[address],
                      allow_other_workers=False, resources=resources, key=f"{key}-replica-{rank}")
        for rank, address in enumerate(workers)
    ]
    try:
        _watch(client, futures, workers, key, config, progress)
        return futures[0].result()
    finally:
        client.cancel(futures)
        _forget(client, key)


def _pick_workers(client: Any, n: int, resources: dict[str, float] | None) -> list[str]:
    """``n`` distinct workers (GPU workers when the cluster offers them, the least busy
    first), waiting for batch jobs to start for at most ``MALAFLOW_WORKER_TIMEOUT`` seconds."""
    def busy(worker: dict) -> int:  # tasks it runs or holds (as of its last heartbeat)
        counts = worker.get("metrics", {}).get("task_counts", {})
        return sum(counts.get(state, 0) for state in ("executing", "ready", "constrained"))

    def suitable() -> list[str]:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        fit = [a for a, w in workers.items()
               if all(w.get("resources", {}).get(k, 0) >= v for k, v in (resources or {}).items())]
        return sorted(fit, key=lambda a: (busy(workers[a]), a))  # idle ones first: trials may run side by side

    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while len(found := suitable()) < n:
        if time.monotonic() > deadline:
            kind = "GPU workers" if resources else "workers"
            raise MalaflowError(f"workers: {n} needs {n} Dask {kind}; the cluster has {len(found)} after "
                                f"{WORKER_TIMEOUT_S:g} s (start more, or lower workers; "
                                "MALAFLOW_WORKER_TIMEOUT sets the wait)")
        time.sleep(0.5)
    return found[:n]


def _watch(client: Any, futures: list[Any], workers: list[str], key: str, config: Any, progress: bool) -> None:
    """Wait for the replicas, following replica 0's epochs; the first lost worker or
    failed replica ends the run."""
    from distributed import Variable, wait

    bar = tqdm(total=config.epochs, desc=f"training {Path(config.output).name} ({len(workers)} workers)",
               unit="epoch", disable=not progress)
    epochs = Variable(key, client=client)
    epochs.set({"epoch": 0})
    with bar:
        while True:
            try:
                wait(futures, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            lost = _lost(client, workers)
            failed = [(rank, f) for rank, f in enumerate(futures) if f.status == "error"]
            if failed and not lost:  # a peer's death shows first in the survivors' sockets
                time.sleep(3.0)
                lost = _lost(client, workers)
            if lost:
                rank = workers.index(lost[0])
                raise MalaflowError(
                    f"training replica {rank} of {len(workers)} was lost with its worker {lost[0]} (the worker died "
                    f"or left the cluster: out of memory, killed, batch job ended); the other replicas stop. "
                    f"Train again to resume from the last checkpoint in {config.output}")
            if failed:
                rank, future = failed[0]
                exc = future.exception()
                if isinstance(exc, MalaflowError):
                    raise exc
                raise MalaflowError(f"training replica {rank} on {workers[rank]} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
            if all(f.status == "finished" for f in futures):
                return
            row = epochs.get()
            if row["epoch"] > bar.n:
                bar.update(row["epoch"] - bar.n)
                bar.set_postfix(train=f"{row['train_loss']:.3e}", val=f"{row['validation_loss']:.3e}")


def _lost(client: Any, workers: list[str]) -> list[str]:
    present = client.scheduler_info(n_workers=-1)["workers"]
    return [w for w in workers if w not in present]


def _forget(client: Any, key: str) -> None:
    from distributed import Variable

    for name in (key, f"{key}-rendezvous"):
        try:
            Variable(name, client=client).delete()
        except Exception:  # the scheduler may be gone already; nothing is left to clean then
            pass


def run_replica(config: Any, rank: int, size: int, key: str, resume: bool, max_epochs: int | None) -> Path | None:
    """One replica (a Dask task pinned to its worker): join the process group, train."""
    import dask
    import torch.distributed as dist
    from distributed import Variable, get_worker

    from .devices import torch_device
    from .training import train_here

    worker = get_worker()
    device = torch_device(config.device, "training config")
    torch.set_num_threads(max(1, worker.state.nthreads))
    rendezvous = Variable(f"{key}-rendezvous")
    timeout = timedelta(seconds=REPLICA_TIMEOUT_S)
    if rank == 0:
        host = urlparse(worker.address).hostname
        store = dist.TCPStore(host, 0, size, is_master=True, timeout=timedelta(seconds=WORKER_TIMEOUT_S),
                              wait_for_workers=False)
        rendezvous.set([host, store.port])
    else:
        host, port = rendezvous.get(timeout=WORKER_TIMEOUT_S)
        store = dist.TCPStore(host, port, size, is_master=False, timeout=timedelta(seconds=WORKER_TIMEOUT_S))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                            world_size=size, timeout=timeout)
    try:
        # the replicas occupy the workers: their own dask work (statistics) runs here
        with dask.config.set(scheduler="threads"):
            model = train_here(config, resume, max_epochs, False, Replica(rank, size, str(device), key))
        dist.barrier()  # all are done before replica 0, host of the rendezvous store, leaves
        return model
    finally:
        dist.destroy_process_group()
