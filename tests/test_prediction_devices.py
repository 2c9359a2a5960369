"""Prediction with any implementation of the model's features and on any device: the
compiled kernel on the fly equals the stored LAMMPS path; CUDA where it exists (gpu
marker), the CPU fallback everywhere; scripts/gpu-check.sh without a GPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import malaflow
from malaflow.errors import ParameterError
from malaflow.store import open_snapshot

from conftest import training_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bispectrum_model(be2_catalog, tmp_path_factory) -> malaflow.TrainedModel:
    """A small model on the bispectrum (twojmax 4): the equivalences below hold for any."""
    config = training_config(be2_catalog, tmp_path_factory.mktemp("bisp") / "model", epochs=2,
                             descriptor={"plugin": "bispectrum", "params": {"twojmax": 4}},
                             model={"plugin": "feedforward", "params": {"layers": [32]}})
    return malaflow.load_model(malaflow.train(config, progress=False))


def band_energy_per_atom(ds) -> float:
    return malaflow.observables(ds).band_energy / ds.sizes["atom"]


def test_fast_prediction_equals_the_stored_lammps_path(bispectrum_model, be2_catalog):
    """On the fly with the compiled kernel (chosen by default on a CPU), with torch, and
    through LAMMPS's features: the band energies agree within 1e-9 eV/atom (3e-13
    measured: the features differ in their last bits only)."""
    reference = open_snapshot(be2_catalog.store_path("be2-3"))
    lammps = malaflow.compute_descriptors(malaflow.Snapshot.from_dataset(reference), "bispectrum_lammps",
                                          {"twojmax": 4}, progress=False)
    through_lammps = band_energy_per_atom(bispectrum_model.predict(reference, descriptors=lammps))
    fast = band_energy_per_atom(bispectrum_model.predict(reference, chunks=9))
    with_torch = band_energy_per_atom(bispectrum_model.predict(reference, chunks=9, implementation="bispectrum_torch"))
    assert abs(fast - through_lammps) < 1e-9 and abs(with_torch - through_lammps) < 1e-9
    with pytest.raises(ParameterError, match="computes 'gaussian', not 'bispectrum'"):
        bispectrum_model.predict(reference, implementation="gaussian")


def test_the_fastest_implementation_is_chosen_per_device():
    from malaflow.descriptors import get_descriptor
    from malaflow.implementations import FastestHere

    lammps = get_descriptor("bispectrum_lammps", {"twojmax": 4})
    here = FastestHere(lammps, "cpu").chosen()
    assert here.name == "bispectrum" and here.params_hash() == lammps.params_hash()
    if torch.cuda.is_available():
        assert FastestHere(lammps, "auto").chosen().name == "bispectrum_torch"


def test_cpu_fallback_and_a_missing_gpu(bispectrum_model, be2_catalog):
    """Here (no CUDA) "auto" runs on the CPU and gives the "cpu" result bit for bit;
    asking for CUDA fails when the chunks run, with a message, not a torch traceback."""
    reference = open_snapshot(be2_catalog.store_path("be2-1"))
    auto = bispectrum_model.predict(reference, chunks=9)["ldos"].values
    np.testing.assert_array_equal(auto, bispectrum_model.predict(reference, chunks=9, device="cpu")["ldos"].values)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="torch sees no CUDA device"):
            bispectrum_model.predict(reference, chunks=9, device="cuda")["ldos"].values
    with pytest.raises(ParameterError, match="device must be auto, cpu or cuda"):
        bispectrum_model.predict(reference, device="tpu")


@pytest.mark.gpu
@needs_cuda
def test_gpu_prediction_matches_the_cpu(bispectrum_model, be2_catalog):
    """Descriptors by torch on the GPU, the network on the same GPU: the LDOS within
    float32 rounding of the CPU path, the band energy within 1e-6 eV/atom."""
    reference = open_snapshot(be2_catalog.store_path("be2-3"))
    cpu = bispectrum_model.predict(reference, chunks=9, device="cpu")
    gpu = bispectrum_model.predict(reference, chunks=9, device="cuda")
    np.testing.assert_allclose(gpu["ldos"].values, cpu["ldos"].values, rtol=1e-4, atol=1e-7)
    assert abs(band_energy_per_atom(gpu) - band_energy_per_atom(cpu)) < 1e-6


@pytest.mark.gpu
@needs_cuda
def test_gpu_bispectrum_matches_the_compiled_kernel():
    from malaflow.descriptors import Structure
    from malaflow_plugins.descriptors.bispectrum import BispectrumDescriptor
    from malaflow_plugins.descriptors.bispectrum_torch import BispectrumTorchDescriptor
    from test_descriptors import TRICLINIC, feature_error

    rng = np.random.default_rng(3)
    structure = Structure.build(rng.random((6, 3)) @ TRICLINIC, [4] * 6, TRICLINIC)
    gpu = BispectrumTorchDescriptor({"device": "cuda", "twojmax": 8}).compute_grid(structure, (8, 7, 9))
    cpu = BispectrumDescriptor({"twojmax": 8}).compute_grid(structure, (8, 7, 9))
    assert feature_error(gpu, cpu) < 1e-12


def test_gpu_check_script_runs_its_cpu_part_without_a_gpu(tmp_path):
    """scripts/gpu-check.sh on a machine without CUDA (any GPU hidden): says so, runs the
    CPU part on a small grid, exits 0."""
    env = dict(os.environ, GPU_CHECK_POINTS="4000", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "no CUDA device" in run.stdout and "compiled kernel" in run.stdout and "points/s" in run.stdout


def test_forces_pick_the_differentiable_implementation_of_the_device():
    """On a CPU the compiled kernel's pullback, on a GPU torch's; the LAMMPS features
    (no derivatives) borrow one."""
    from malaflow.descriptors import get_descriptor
    from malaflow.implementations import differentiable

    lammps = get_descriptor("bispectrum_lammps", {"twojmax": 6})
    assert differentiable(lammps, "cpu").name == "bispectrum"
    assert differentiable(get_descriptor("bispectrum_torch"), "cpu").name == "bispectrum"
    if torch.cuda.is_available():
        assert differentiable(lammps, "cuda").name == "bispectrum_torch"


@pytest.mark.gpu
@needs_cuda
def test_gpu_forces_match_the_cpu(bispectrum_model):
    """Forces with the network and the descriptors' pullback on the GPU (float64) equal
    the CPU path's (compiled pullback) to float64 rounding."""
    from ase.build import bulk

    from malaflow.forces import energy_state, forces

    atoms = bulk("Be", "hcp", a=2.26, c=3.57)
    atoms.rattle(0.05, seed=3)
    results = {}
    for device in ("cpu", "cuda"):
        state = energy_state(bispectrum_model, atoms, chunks=9, device=device)
        results[device] = (state.free_energy, forces(bispectrum_model, state, chunks=9, device=device).forces)
    assert results["cuda"][0] == pytest.approx(results["cpu"][0], abs=1e-8)
    np.testing.assert_allclose(results["cuda"][1], results["cpu"][1], atol=1e-7)
