"""Data-parallel training throughput: malaflow with 1 and 2 Dask workers (1 thread each,
torch DDP over gloo), beside MALA 1.4.0 in one process and MALA's own DDP switch.

Data: MALA's Be2 test data, snapshots 0, 1 train / 2 validate, the same precomputed
bispectrum descriptors (``*.in.npy``) on both sides. Two networks: MALA's example
(91 → 100 → 11, batches of 40) and a wider one (91 → 400 → 400 → 400 → 11, batches of
512) whose steps are worth sharing. Throughput is training points per second of an
epoch (median over epochs 2…, the first holds the set-up), MALA's from its whole
``train_network()`` call.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from .harness import measure, table
from .training import DATA, TRAIN_POINTS

SCALING = {"malaflow, workers: 2": "malaflow, workers: 1", "plain torch DDP, 2 processes": "plain torch DDP, 1 process"}
NETWORKS = {"small": ([100], 40), "wide": ([400, 400, 400], 512)}
EPOCHS = 6


def mala(data: str, network: str, ddp: bool) -> dict:
    import mala as m

    from .mala_inputs import be2_parameters

    layers, batch = NETWORKS[network]
    if ddp:  # what torchrun would set for a single rank
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    p = be2_parameters(epochs=EPOCHS)
    p.running.mini_batch_size = batch
    p.network.layer_activations = "ReLU"
    p.running.learning_rate = 1e-4
    p.use_ddp = ddp
    handler = m.DataHandler(p)
    for i, kind in ((0, "tr"), (1, "tr"), (2, "va")):
        handler.add_snapshot(f"Be_snapshot{i}.in.npy", data, f"Be_snapshot{i}.out.npy", data, kind)
    handler.prepare_data()
    p.network.layer_sizes = [handler.input_dimension, *layers, handler.output_dimension]
    trainer = m.Trainer(p, m.Network(p), handler)
    t0 = time.perf_counter()
    trainer.train_network()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "points_per_s": TRAIN_POINTS * EPOCHS / seconds}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def malaflow(data: str, network: str, workers: int, gpu: bool = False) -> dict:
    import malaflow as mf
    from malaflow.catalog import Catalog

    layers, batch = NETWORKS[network]
    work = Path(tempfile.mkdtemp())
    try:
        cat = Catalog(work / "catalog.yaml")
        for i, split in enumerate(["train", "train", "validation"]):
            cat.add(Path(data) / f"Be_snapshot{i}.out.npy", reader="mala", id=f"be2-{i}", split=split,
                    descriptor_params="mala")
        config = mf.TrainingConfig(
            output=str(work / "model"), catalog=str(cat.path), descriptor={"plugin": "bispectrum", "params": {}},
            model={"plugin": "feedforward", "params": {"layers": layers}}, epochs=EPOCHS, batch_size=batch,
            learning_rate=1e-4, early_stopping=0, workers=workers, checkpoint_every=EPOCHS)
        t0 = time.perf_counter()
        peak = None
        if workers == 1 and not gpu:
            path = mf.train(config, progress=False)
        else:
            kind = {"kind": "local-cuda", "workers": workers} if gpu else {"kind": "local", "workers": workers,
                                                                            "threads_per_worker": 1}
            with mf.cluster({**kind, "dashboard_address": None}) as client:
                path = mf.train(config, client=client, progress=False)
                peak = max(client.run(_peak_mb).values())
        seconds = time.perf_counter() - t0
        history = json.loads((Path(path) / "history.json").read_text())
        epoch_s = statistics.median(h["seconds"] for h in history[1:])
        return {"seconds": seconds, "points_per_s": TRAIN_POINTS / epoch_s, "worker_peak_mb": peak}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def torch_ddp(network: str, processes: int) -> dict:
    """The ceiling on this machine: plain torch DDP (gloo) in ``processes`` processes of
    torch.multiprocessing, random data already in memory, no Dask, no loader."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    t0 = time.perf_counter()
    mp.spawn(_ddp_steps, args=(processes, network, _free_port(), queue), nprocs=processes)
    return {"seconds": time.perf_counter() - t0, "points_per_s": queue.get()}


def _ddp_steps(rank: int, size: int, network: str, port: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    layers, batch = NETWORKS[network]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    torch.manual_seed(0)
    widths = [91, *layers]
    modules = [m for a, b in zip(widths, widths[1:]) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())]
    net = torch.nn.Sequential(*modules, torch.nn.Linear(widths[-1], 11))
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    x, y = torch.randn(batch // size, 91), torch.randn(batch // size, 11)
    steps = max(50, 20_000 // batch)
    for step in range(steps + 10):
        if step == 10:
            t0 = time.perf_counter()
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
    if rank == 0:
        queue.put(batch * steps / (time.perf_counter() - t0))
    dist.barrier()  # no process leaves while another still talks to it
    dist.destroy_process_group()


def _peak_mb() -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) / 1024


def main() -> str:
    if not DATA.is_dir():
        return f"(skipped: no Be2 data at {DATA})"
    rows = []
    for network, (layers, batch) in NETWORKS.items():
        label = f"91→{'→'.join(map(str, layers))}→11, batch {batch}"
        runs = [
            ("MALA 1.4.0, 1 process", measure("benchmarks.data_parallel", "mala", str(DATA), network, False)),
            ("MALA 1.4.0, use_ddp (1 rank, CPU)", measure("benchmarks.data_parallel", "mala", str(DATA), network, True)),
            ("malaflow, workers: 1", measure("benchmarks.data_parallel", "malaflow", str(DATA), network, 1)),
            ("malaflow, workers: 2", measure("benchmarks.data_parallel", "malaflow", str(DATA), network, 2)),
            ("plain torch DDP, 1 process", measure("benchmarks.data_parallel", "torch_ddp", network, 1)),
            ("plain torch DDP, 2 processes", measure("benchmarks.data_parallel", "torch_ddp", network, 2)),
        ]
        rates = {name: m.extra.get("points_per_s") for name, m in runs}
        for name, m in runs:
            if m.seconds is None:
                rows.append([label, name, "-", "-", "-", m.note])
                continue
            rate = m.extra["points_per_s"]
            single = rates.get(SCALING.get(name, ""))
            efficiency = f"{rate / (2 * single):.0%}" if single else "-"
            peak = "-" if name.startswith("plain") else f"{m.extra.get('worker_peak_mb') or m.peak_mb:.0f}"
            rows.append([label, name, f"{rate:,.0f}", efficiency, peak, ""])
    return table(rows, ["network", "run", "points/s per epoch", "scaling efficiency", "peak MB (per worker)", "note"])


def gpu_main() -> str:
    """For scripts/gpu-check.sh: the wide network on 1 GPU and on all GPUs of this machine
    (dask-cuda, one worker per GPU), batches of 512 × GPUs so each GPU keeps 512."""
    import torch

    if not torch.cuda.is_available() or not DATA.is_dir():
        return "(skipped: needs CUDA and the Be2 data)"
    n = torch.cuda.device_count()
    NETWORKS["wide-gpu"] = (NETWORKS["wide"][0], 512 * n)
    one = malaflow(str(DATA), "wide-gpu", 1, True)["points_per_s"]
    all_ = malaflow(str(DATA), "wide-gpu", n, True)["points_per_s"] if n > 1 else one
    return table([["1 GPU", f"{one:,.0f}", "-"], [f"{n} GPUs", f"{all_:,.0f}", f"{all_ / (n * one):.0%}"]],
                 ["data-parallel training", "points/s per epoch", "scaling efficiency"])


if __name__ == "__main__":
    print(gpu_main())
