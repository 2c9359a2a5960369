"""bispectrum_torch: parity with LAMMPS and MALA's files, chunk-wise exactness,
distribution over workers, GPU-resource requests, derivatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from malaflow import compute_descriptors, read_snapshot, write_snapshot
from malaflow.descriptors import Structure, get_descriptor
from malaflow.errors import ParameterError
from malaflow_plugins.descriptors.bispectrum_lammps import BispectrumLammpsDescriptor
from malaflow_plugins.descriptors.bispectrum_torch import BispectrumTorchDescriptor, bispectrum_features
from malaflow_plugins.descriptors.snap import clebsch_gordan

from conftest import DEMO_DATA, at_points, mala_bispectrum
from test_descriptors import TRICLINIC, feature_error


def test_clebsch_gordan_against_sympy():
    from sympy import Rational
    from sympy.physics.quantum.cg import CG

    rng = np.random.default_rng(0)
    checked = 0
    while checked < 150:
        j1, j2 = rng.integers(0, 9, size=2)
        j = int(rng.integers(abs(j1 - j2), j1 + j2 + 1))
        m1, m2 = int(rng.choice(range(-j1, j1 + 1, 2))), int(rng.choice(range(-j2, j2 + 1, 2)))
        if (j1 + j2 + j) % 2 or abs(m1 + m2) > j:
            continue
        half = lambda x: Rational(int(x), 2)  # noqa: E731
        expected = float(CG(half(j1), half(m1), half(j2), half(m2), half(j), half(m1 + m2)).doit())
        assert clebsch_gordan(int(j1), m1, int(j2), m2, j, m1 + m2) == pytest.approx(expected, abs=1e-13)
        checked += 1


@pytest.mark.parametrize("snapshot", range(4))
def test_parity_with_mala_files_and_lammps(mala_data, snapshot):
    """twojmax 10 against MALA's .in.npy (float32: 5.8e-8 of each feature's scale
    measured, as LAMMPS's), twojmax 4 and 6 against the LAMMPS plugin (3.0e-14 measured)."""
    snap = read_snapshot(mala_data / "Be2" / f"Be_snapshot{snapshot}.info.json", reader="mala")
    structure = Structure.from_any(snap)
    index, reference = mala_bispectrum(mala_data, snapshot)
    values = BispectrumTorchDescriptor().compute_grid(structure, snap.grid_shape)
    assert feature_error(at_points(values, index), reference) < 5e-7
    for twojmax in (4, 6):
        lammps = BispectrumLammpsDescriptor({"twojmax": twojmax}).compute_grid(structure, snap.grid_shape)
        torch_values = BispectrumTorchDescriptor({"twojmax": twojmax}).compute_grid(structure, snap.grid_shape)
        assert feature_error(torch_values, lammps) < 3e-13, twojmax


def test_two_element_triclinic_cell_matches_lammps():
    rng = np.random.default_rng(11)
    numbers = [4, 4, 1, 1, 4]
    structure = Structure.build(rng.random((5, 3)) @ TRICLINIC, numbers, TRICLINIC)
    params = {"twojmax": 6, "radelem": {"H": 0.35, "Be": 0.5}, "wj": {"H": 0.7, "Be": 1.0}, "rcutfac": 4.2}
    grid = (7, 6, 8)
    lammps = BispectrumLammpsDescriptor(params).compute_grid(structure, grid)
    values = BispectrumTorchDescriptor(params).compute_grid(structure, grid)
    assert feature_error(values, lammps) < 4e-14  # 3.9e-15 measured
    quad = {**params, "quadraticflag": 1, "bzeroflag": 1, "twojmax": 4}
    assert feature_error(
        BispectrumTorchDescriptor(quad).compute_grid(structure, grid),
        BispectrumLammpsDescriptor(quad).compute_grid(structure, grid),
    ) < 1e-13  # 9.3e-15 measured


@pytest.mark.parametrize("chunks,batch", [((5, 7, 3), 4096), (9, 50), ((18, 2, 27), 7)])
def test_blocks_equal_the_whole_grid_exactly(chunks, batch):
    snap = read_snapshot(DEMO_DATA / "Be_snapshot2.info.json")
    params = {"twojmax": 4}
    whole = BispectrumTorchDescriptor(params).compute_grid(Structure.from_any(snap), snap.grid_shape)
    if isinstance(chunks, int):
        chunks = (chunks,) * 3
    chunked = compute_descriptors(snap, "bispectrum_torch", params, chunks=dict(zip("xyz", chunks)),
                                  batch_points=batch, progress=False)
    np.testing.assert_array_equal(chunked.values, whole)


def test_one_snapshot_over_two_workers_and_gpu_requests(tmp_path):
    """One snapshot in 12 blocks over a LocalCluster whose one worker declares a GPU:
    every task asks for the GPU resource, so all land there and run on torch's CPU
    fallback; the stored result equals the local threaded one."""
    distributed = pytest.importorskip("distributed")
    snap = read_snapshot(DEMO_DATA / "Be_snapshot1.info.json")
    store = write_snapshot(snap, tmp_path / "s.zarr")
    params = {"twojmax": 4}
    local = compute_descriptors(snap, "bispectrum_torch", params, chunks=9, progress=False)
    workers = {
        "cpu": {"cls": distributed.Nanny, "options": {"nthreads": 1}},
        "gpu": {"cls": distributed.Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    with distributed.SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2)
            [gpu_worker] = [a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "gpu"]
            with distributed.get_task_stream(client) as stream:
                stored = compute_descriptors(store, "bispectrum_torch", params, chunks=9, client=client,
                                             progress=False, dtype=None)
    tasks = [t for t in stream.data if str(t["key"]).startswith("_compute_region")]
    assert len(tasks) == 12 and {t["worker"] for t in tasks} == {gpu_worker}
    np.testing.assert_array_equal(stored.values, local.values)


def test_device_choice():
    assert BispectrumTorchDescriptor({"device": "cpu"}).device().type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert BispectrumTorchDescriptor().device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA"):
            BispectrumTorchDescriptor({"device": "cuda"}).device()
    with pytest.raises(ParameterError, match="precision"):
        get_descriptor("bispectrum_torch", {"precision": "float16"})
    # device and precision say how, not what: the stored name and hash of the feature set
    assert get_descriptor("bispectrum_torch", {"device": "cpu", "precision": "float32"}).store_name() == "bispectrum"


def test_float32_is_close_to_float64():
    snap = read_snapshot(DEMO_DATA / "Be_snapshot0.info.json")
    s = Structure.from_any(snap)
    d64 = BispectrumTorchDescriptor({"twojmax": 6}).compute_grid(s, (6, 6, 9))
    d32 = BispectrumTorchDescriptor({"twojmax": 6, "precision": "float32"}).compute_grid(s, (6, 6, 9))
    assert feature_error(d32, d64) < 1e-4  # single precision: ~1e-7 per operation, many operations


def test_gradient_with_respect_to_positions_matches_finite_differences():
    """d(Σ w·B)/d(positions) by autograd against central differences (h = 1e-5 Å:
    truncation ~h², rounding ~1e-16/h, both far below the 1e-6 tolerance)."""
    rng = np.random.default_rng(3)
    params = BispectrumTorchDescriptor({"twojmax": 6}).params
    points = torch.tensor(rng.random((5, 3)) * 3.0)
    positions0 = rng.random((4, 3)) * 3.0
    radius = torch.full((4,), 0.5, dtype=torch.float64)
    weight = torch.tensor([1.0, 0.8, 1.0, 0.8])
    w = torch.tensor(rng.normal(size=(5, 30)))

    def objective(x: torch.Tensor) -> torch.Tensor:
        return (w * bispectrum_features(points, x, radius, weight, params)).sum()

    x = torch.tensor(positions0, requires_grad=True)
    (grad,) = torch.autograd.grad(objective(x), x)
    h = 1e-5
    numeric = np.zeros_like(positions0)
    for i in range(4):
        for k in range(3):
            plus, minus = positions0.copy(), positions0.copy()
            plus[i, k] += h
            minus[i, k] -= h
            numeric[i, k] = (objective(torch.tensor(plus)).item() - objective(torch.tensor(minus)).item()) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8 * np.abs(numeric).max())
