"""Run as a subprocess by test_ldos_target: reduce a 256³×64 lazily generated LDOS.

LDOS(r, ε) = (1 + ½ sin(2π i/n)) · g(ε): its DOS is exactly V·g(ε) (the sine sums to
zero over a period). Prints the max relative DOS error and how far the reduction raised
the process's peak RSS above its RSS before it (MB). The synchronous scheduler makes the
memory in flight a property of the code (the task order), not of the machine's load.
"""

import sys

import dask
import dask.array as da
import numpy as np
import xarray as xr

from malaflow.physics.dos import density_of_states
from peak_memory import peak_mb, reset_peak

n, n_e, chunk = (int(a) for a in sys.argv[1:4])
cell = np.diag([10.0, 11.0, 12.0])
energies = np.linspace(-5, 5, n_e)
g = np.exp(-0.5 * (energies / 2.0) ** 2)
modulation = 1 + 0.5 * da.sin(2 * np.pi * da.arange(n, chunks=chunk) / n)
ones = da.ones((n, n, n, 1), chunks=(chunk, chunk, chunk, 1), dtype=np.float32)
ldos = (modulation[:, None, None, None].astype(np.float32) * ones * g.astype(np.float32)).rechunk((chunk, chunk, chunk, n_e))
arr = xr.DataArray(ldos, dims=("x", "y", "z", "energy"), coords={"energy": energies})
before = reset_peak()
with dask.config.set(scheduler="synchronous"):
    dos = density_of_states(arr, cell).values
raised = peak_mb() - before
expected = abs(np.linalg.det(cell)) * g
print(float(np.max(np.abs(dos - expected) / expected.max())), raised)
