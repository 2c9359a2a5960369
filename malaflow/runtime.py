"""Where work runs: Dask clusters from a config, and independent tasks on them.

:func:`run_tasks` runs ``(function, args)`` tasks on the session's Dask client (or local
threads) with a progress bar; training, hyperparameter trials, DFT generation and the
descriptors all go through it. :func:`cluster` starts a client from a config: local,
SLURM or PBS (dask-jobqueue), or a running scheduler.

    with malaflow.cluster("cluster.yaml") as client:
        malaflow.compute_descriptors(stores, "bispectrum_torch", client=client)

The config is a mapping (or a YAML file holding one, optionally under a ``cluster:`` key):

    kind: slurm            # local (default) | local-cuda | slurm | pbs | address
    jobs: 4                # batch jobs to start (or adaptive: {minimum: 0, maximum: 8})
    cores: 8               # per job
    processes: 2           # Dask workers per job
    memory: 32GB           # per job
    walltime: "02:00:00"
    queue: gpu
    account: my-project
    gpus_per_worker: 1     # declares the Dask resource GPU on every worker (and --gres for SLURM)
    job_extra_directives: ["--constraint=a100"]

Tasks that want a GPU (torch descriptors, training) ask for the resource ``GPU`` only
when some worker offers it, so the same code runs on CPU-only clusters. ``local-cuda``
is one machine with several GPUs: dask-cuda's ``LocalCUDACluster``, one worker per GPU
(``devices: "0,1"`` to choose them), each offering ``GPU: 1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .errors import MalaflowError, ParameterError
from .params import check_keys
from .config import config_source, resolve

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tasks


def session_client() -> Any:
    """The Dask distributed client of this session, if the user made one."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def task_resources(client: Any, wanted: Mapping[str, float] | None) -> dict[str, float] | None:
    """``wanted`` if some worker offers it, else None (then any CPU worker runs the task)."""
    if not wanted:
        return None
    for worker in client.scheduler_info().get("workers", {}).values():
        offered = worker.get("resources", {})
        if all(offered.get(k, 0) >= v for k, v in wanted.items()):
            return dict(wanted)
    return None


WORKER_TIMEOUT_S = float(os.environ.get("MALAFLOW_WORKER_TIMEOUT", 600))


def wait_for_a_worker(client: Any) -> None:
    """Tasks sent to a cluster without workers would wait for ever: wait for one, bounded."""
    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
    except TimeoutError:
        raise MalaflowError(f"no Dask worker joined the cluster at {client.scheduler.address} in "
                            f"{WORKER_TIMEOUT_S:g} s (batch jobs still queued? see the dashboard "
                            f"{client.dashboard_link}; MALAFLOW_WORKER_TIMEOUT sets the wait)") from None


def run_tasks(
    tasks: Sequence[tuple[Callable[..., Any], tuple]],
    client: Any = None,
    desc: str = "tasks",
    unit: str = "task",
    progress: bool = True,
    resources: Mapping[str, float] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    workers: int | None = None,
) -> list[Any]:
    """Run independent ``(function, args)`` tasks on a Dask client or local threads
    (``workers`` of them, default one per core).

    Results come back in task order; ``on_result(index, result)`` is called as each task
    finishes (in the caller's thread); a progress bar counts finished tasks. The first
    failure cancels what has not started and is raised.
    """
    client = client or session_client()
    with contextlib.ExitStack() as stack:
        if client is not None:
            from distributed import as_completed

            res = task_resources(client, resources)
            wait_for_a_worker(client)
            futures = [client.submit(fn, *args, pure=False, resources=res) for fn, args in tasks]
            stack.callback(lambda: client.cancel([f for f in futures if not f.done()]))
        else:
            from concurrent.futures import as_completed

            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1))
            futures = [pool.submit(fn, *args) for fn, args in tasks]
            stack.callback(lambda: [f.cancel() for f in futures])
        bar = stack.enter_context(tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress or not tasks))
        index = {id(f): i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        for future in as_completed(futures):
            i = index[id(future)]
            results[i] = future.result()
            if on_result is not None:
                on_result(i, results[i])
            bar.update()
    return results


# --------------------------------------------------------------------------- clusters

KINDS = ("local", "local-cuda", "slurm", "pbs", "address")
COMMON = {"kind", "gpus_per_worker"}
KEYS = {
    "local": {"workers", "threads_per_worker", "memory_limit", "processes", "dashboard_address"},
    "local-cuda": {"workers", "threads_per_worker", "memory_limit", "dashboard_address", "devices"},
    "address": {"address"},
    "slurm": {"jobs", "adaptive", "cores", "processes", "memory", "walltime", "queue", "account",
              "job_extra_directives", "job_script_prologue", "local_directory", "log_directory", "interface",
              "python", "scheduler_options"},
}
KEYS["pbs"] = KEYS["slurm"]


def load_config(config: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """A cluster section from a mapping or YAML file; checked against the known keys."""
    if config is None:
        return {"kind": "local"}
    config, base = config_source(config, "cluster config")
    if isinstance(config.get("cluster"), Mapping):  # a cluster: section of a larger file
        config = dict(config["cluster"])
    kind = config.setdefault("kind", "local")
    if kind not in KINDS:
        raise ParameterError(f"cluster kind must be one of {', '.join(KINDS)}, got {kind!r}")
    check_keys(config, COMMON | KEYS[kind], f"{kind} cluster")
    if kind == "address" and "address" not in config:
        raise ParameterError("an 'address' cluster needs address: tcp://host:port")
    _check_ranges(config, f"{kind} cluster")
    for key in ("local_directory", "log_directory"):
        if key in config:
            config[key] = resolve(base, config[key])
    return config


# counts: key → smallest whole number allowed
_MINIMUM = {"workers": 1, "threads_per_worker": 1, "jobs": 0, "cores": 1}


def _check_ranges(config: Mapping[str, Any], label: str) -> None:
    """Counts are whole numbers in range: ``workers: -2`` would start no worker and wait forever."""
    def whole(key: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(f"{label}: {key} must be a whole number ≥ {low}, got {value!r}")

    for key, low in _MINIMUM.items():
        if config.get(key) is not None:
            whole(key, config[key], low)
    gpus = config.get("gpus_per_worker")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0):
        raise ParameterError(f"{label}: gpus_per_worker must be a number ≥ 0, got {gpus!r}")
    if config.get("kind") != "local" and "processes" in config:
        whole("processes", config["processes"], 1)
    if "adaptive" in config:
        adaptive = config["adaptive"]
        if not isinstance(adaptive, Mapping):
            raise ParameterError(f"{label}: adaptive is a mapping with minimum and maximum (jobs)")
        whole("adaptive.minimum", adaptive.get("minimum", 0), 0)
        whole("adaptive.maximum", adaptive.get("maximum", 1), max(1, adaptive.get("minimum", 0)))


def _resources(config: Mapping[str, Any]) -> dict[str, float]:
    gpus = config.get("gpus_per_worker")
    return {"GPU": float(gpus)} if gpus else {}


def make_cluster(config: Mapping[str, Any]):
    """The Dask cluster object (not yet a client) a config describes; None for 'address'."""
    kind = config["kind"]
    resources = _resources(config)
    if kind == "address":
        return None
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=config.get("workers"), threads_per_worker=config.get("threads_per_worker"),
            memory_limit=config.get("memory_limit", "auto"), processes=config.get("processes", True),
            dashboard_address=config.get("dashboard_address", ":0"), resources=resources or None,
        )
    if kind == "local-cuda":
        return _local_cuda_cluster(config)
    import dask_jobqueue

    options = {k: v for k, v in config.items() if k not in COMMON | {"jobs", "adaptive"}}
    options.setdefault("cores", 1)
    options.setdefault("memory", "4GB")
    if resources:
        extra = list(options.pop("worker_extra_args", []))
        options["worker_extra_args"] = extra + ["--resources", f"GPU={resources['GPU']:g}"]
        if kind == "slurm":
            per_job = int(resources["GPU"]) * int(options.get("processes", 1))
            options["job_extra_directives"] = list(options.get("job_extra_directives", [])) + [f"--gres=gpu:{per_job}"]
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    cluster = cls(**options)
    if "adaptive" in config:
        adaptive = dict(config["adaptive"])
        cluster.adapt(minimum_jobs=adaptive.get("minimum", 0), maximum_jobs=adaptive.get("maximum", 1))
    else:
        cluster.scale(jobs=int(config.get("jobs", 1)))
    return cluster


def _local_cuda_cluster(config: Mapping[str, Any]):
    """One worker per GPU of this machine (dask-cuda sets each worker's CUDA_VISIBLE_DEVICES)."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise MalaflowError("kind: local-cuda needs dask-cuda on a machine with NVIDIA GPUs: "
                            "pip install dask-cuda") from None
    return LocalCUDACluster(
        n_workers=config.get("workers"), CUDA_VISIBLE_DEVICES=config.get("devices"),
        threads_per_worker=config.get("threads_per_worker", 1), memory_limit=config.get("memory_limit", "auto"),
        dashboard_address=config.get("dashboard_address", ":0"), resources={"GPU": 1},
    )


@contextlib.contextmanager
def cluster(config: Mapping[str, Any] | str | Path | None = None, wait_for_workers: int | None = None,
            timeout: float = 300.0, announce: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster a config describes, closed afterwards.

    The dashboard link is logged (``announce``; the CLI prints it itself). ``wait_for_workers`` blocks
    until that many workers are up (batch jobs may queue for a while)."""
    from distributed import Client

    settings = load_config(config)
    dask_cluster = make_cluster(settings)
    try:
        client = Client(settings["address"]) if dask_cluster is None else Client(dask_cluster)
        with client:
            if announce:
                log.warning("Dask dashboard: %s", client.dashboard_link)
            if wait_for_workers:
                client.wait_for_workers(wait_for_workers, timeout=timeout)
            yield client
    finally:
        if dask_cluster is not None:
            dask_cluster.close()
