#!/usr/bin/env bash
# GPU checks, run from the repository root after the README's install on a machine with an
# NVIDIA GPU (a few minutes): the gpu-marked tests, then the SNAP bispectrum's points/s on
# the GPU beside one CPU core (compiled kernel) and LAMMPS, the largest GPU-vs-CPU feature
# deviation and an end-to-end prediction time for a ≥10⁶-point Be grid; the tests include
# forces on the GPU (torch pullback) against the CPU path; then data-parallel training
# throughput on 1 GPU and on all GPUs (needs pip install dask-cuda)
# (GPU_CHECK_POINTS sets the size). Without CUDA it says so, runs the CPU part, exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "== gpu-marked tests"
    python -m pytest -q -p no:cacheprovider -m gpu tests/test_prediction_devices.py tests/test_data_parallel.py  # prediction, bispectrum, forces, DDP (2 GPUs) on the GPU
else
    echo "== no CUDA device: torch sees no GPU here; the gpu-marked tests are skipped"
fi
echo "== bispectrum and prediction"
python -m benchmarks.gpu
if python -c "import sys, torch, dask_cuda; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "== data-parallel training: 1 GPU vs all GPUs (dask-cuda LocalCUDACluster)"
    python -m benchmarks.data_parallel
fi
