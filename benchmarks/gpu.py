"""The GPU check (``scripts/gpu-check.sh``): the SNAP bispectrum (twojmax 10, MALA's
parameters) of a Be grid of ≥ $GPU_CHECK_POINTS points (default 10⁶: Be2 snapshot 3
tiled) — points/s on the GPU (``bispectrum_torch``) beside one CPU core (compiled
kernel) and LAMMPS, the largest deviation of GPU from CPU features, and an end-to-end
prediction (descriptors → 91→200→11 network → band energy) on the device. Without CUDA
it says so and runs the CPU part. The CPU rates are measured on samples of the grid
(a whole 10⁶-point grid on one core would take most of an hour)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

CPU_SAMPLE = 4096  # points the one-core rates are measured on


def be_cell(points: int):
    """Be2 snapshot 3 tiled n×n×n, the smallest n giving ≥ ``points`` grid points."""
    from importlib.resources import files

    import malaflow
    from malaflow.descriptors import Structure

    snap = malaflow.read_snapshot(Path(str(files("malaflow.demo_data"))) / "Be2" / "Be_snapshot3.info.json")
    n = max(1, math.ceil((points / math.prod(snap.grid_shape)) ** (1 / 3)))
    atoms = snap.atoms.repeat((n, n, n))
    return Structure.from_any(atoms), tuple(g * n for g in snap.grid_shape), atoms


def rate(descriptor, structure, grid, sample: int | None) -> tuple[float, np.ndarray]:
    """Points per second of ``descriptor`` on the first ``sample`` grid points (all if None)."""
    from malaflow.descriptors import compute_block

    n = math.prod(grid) if sample is None else min(sample, math.prod(grid))
    rows = max(1, n // (grid[1] * grid[2]))
    region = (slice(0, rows), slice(0, grid[1]), slice(0, grid[2]))
    compute_block(descriptor, structure, grid, (slice(0, 1), slice(0, 1), slice(0, 2)))  # compile, warm up
    t0 = time.perf_counter()
    values = compute_block(descriptor, structure, grid, region)
    return values.shape[0] * grid[1] * grid[2] / (time.perf_counter() - t0), values


def lammps_rate() -> float:
    """Points per second of LAMMPS (one core) on the Be2 unit cell's grid."""
    from malaflow.descriptors import get_descriptor

    structure, grid, _ = be_cell(1)
    t0 = time.perf_counter()
    get_descriptor("bispectrum_lammps").compute_grid(structure, grid)
    return math.prod(grid) / (time.perf_counter() - t0)


def end_to_end(atoms, grid, device: str) -> float:
    """Seconds of a prediction (a 91→200→11 network of random weights, identity
    scalers) through to the band energy."""
    import malaflow
    from malaflow.data import Scaler
    from malaflow.models import get_model

    energies = np.linspace(-5.0, 20.0, 11)
    network = get_model("feedforward", {"layers": [200]}).build(91, 11)
    identity = lambda n: Scaler("none", np.zeros(n), np.ones(n))  # noqa: E731
    model = malaflow.TrainedModel(network, {"plugin": "feedforward", "params": {"layers": [200]}},
                                  {"plugin": "bispectrum", "params": {}}, identity(91), identity(11),
                                  energies, 298.0, {"Be": 4.0}, [0.1, 0.1, 0.1])
    t0 = time.perf_counter()
    predicted = model.predict(atoms, grid_shape=grid, chunks=32, device=device)
    dos = malaflow.get_target("ldos").dos(predicted).values
    assert np.all(np.isfinite(dos))
    return time.perf_counter() - t0


def main() -> str:
    from malaflow.descriptors import get_descriptor

    points = int(float(os.environ.get("GPU_CHECK_POINTS", 1e6)))
    structure, grid, atoms = be_cell(points)
    total = math.prod(grid)
    lines = [f"SNAP bispectrum, twojmax 10, Be, {len(atoms)} atoms, grid {'×'.join(map(str, grid))} = {total} points"]
    cpu_rate, cpu_values = rate(get_descriptor("bispectrum", {"threads": 1}), structure, grid, CPU_SAMPLE)
    lines.append(f"  CPU, one core, compiled kernel:  {cpu_rate:10.0f} points/s")
    lines.append(f"  CPU, one core, LAMMPS:           {lammps_rate():10.0f} points/s (Be2 unit cell grid)")
    if not torch.cuda.is_available():
        lines.append("  no CUDA device here: the GPU part is skipped (CPU part only)")
        lines.append(f"  end-to-end prediction on the CPU ({os.cpu_count()} cores): {end_to_end(atoms, grid, 'cpu'):.1f} s")
        return "\n".join(lines)
    gpu = get_descriptor("bispectrum_torch", {"device": "cuda"})
    gpu_rate, _ = rate(gpu, structure, grid, None)
    _, gpu_sample = rate(gpu, structure, grid, CPU_SAMPLE)
    scale = np.abs(cpu_values).reshape(-1, cpu_values.shape[-1]).max(axis=0)
    deviation = float((np.abs(gpu_sample - cpu_values) / scale).max())
    lines.append(f"  GPU ({torch.cuda.get_device_name(0)}), bispectrum_torch: {gpu_rate:10.0f} points/s "
                 f"({gpu_rate / cpu_rate:.1f}× one CPU core)")
    lines.append(f"  largest deviation GPU vs CPU features: {deviation:.2e} of a feature's scale")
    lines.append(f"  end-to-end prediction on the GPU, {total} points: {end_to_end(atoms, grid, 'cuda'):.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
