"""Training, the model artifact, prediction and the ASE calculator, on the Be2 data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import malaflow
from malaflow.catalog import Catalog
from malaflow.cli import app
from malaflow.data import BatchLoader, Scaler, SnapshotPair
from malaflow.errors import MalaflowError, ParameterError, PluginError
from malaflow.evaluation import evaluate_store

from conftest import training_config as config

runner = CliRunner()
# --------------------------------------------------------------------------- data


def test_scalers_match_numpy_statistics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (500, 4)), rng.normal(-1.0, 0.5, (300, 4))
    both = np.vstack([a, b])
    parts = [da.from_array(a, chunks=(128, 4)), da.from_array(b, chunks=(100, 4))]
    standard = Scaler.fit("standard", parts)
    np.testing.assert_allclose(standard.shift, both.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(standard.scale, both.std(axis=0), rtol=1e-10)
    minmax = Scaler.fit("global-minmax", parts)
    assert minmax.shift[0] == both.min() and minmax.scale[0] == pytest.approx(both.max() - both.min())
    np.testing.assert_allclose(standard.inverse(standard.transform(both)), both, rtol=1e-12)
    assert np.allclose(Scaler.fit("none", parts).transform(both), both)
    with pytest.raises(ParameterError, match="unknown scaling"):
        Scaler.fit("zscore", parts)


def test_streaming_loader_visits_every_point_once_per_epoch(be2_catalog):
    pairs = [SnapshotPair.open(be2_catalog.store_path(f"be2-{i}"), "gaussian", "ldos") for i in (0, 1)]
    identity = Scaler("none", np.zeros(1), np.ones(1)), Scaler("none", np.zeros(11), np.ones(11))
    loader = BatchLoader(pairs, *identity, batch_size=100, buffer_points=1500, cache_mb=0.0, seed=3)
    assert not loader.cached and len(pairs[0].blocks) == 2 * 2 * 3
    expected = np.concatenate([np.asarray(p.outputs).reshape(-1, 11) for p in pairs])
    epochs = [np.concatenate([y for _, y in loader.epoch(e)]) for e in (1, 2, 1)]
    for seen in epochs:
        assert len(seen) == len(expected) == 2 * 18 * 18 * 27
        np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(expected.astype(np.float32), axis=0))
    assert not np.array_equal(epochs[0], epochs[1])  # shuffled differently per epoch …
    np.testing.assert_array_equal(epochs[0], epochs[2])  # … and reproducibly
    batches = [len(x) for x, _ in loader.epoch(1)]
    assert all(n == 100 for n in batches[:-1]) and sum(batches) == len(expected)


def test_a_bootstrap_loader_takes_each_point_a_poisson_number_of_times(be2_catalog):
    """Bagging: each point appears k ~ Poisson(1) times (e⁻¹ of them never), streamed or
    cached alike; another seed draws another resample."""
    opened = [SnapshotPair.open(be2_catalog.store_path(f"be2-{i}"), "gaussian", "ldos") for i in (0, 1)]
    ids = np.arange(2 * opened[0].n_points, dtype=np.float32).reshape(2, *opened[0].outputs.shape[:3], 1)
    # each point's target is its number, so that the epoch says which points it holds
    pairs = [SnapshotPair(p.store, p.inputs, da.from_array(i, chunks=p.outputs.chunks[:3] + ((1,),)), p.blocks)
             for p, i in zip(opened, ids)]
    identity = Scaler("none", np.zeros(1), np.ones(1)), Scaler("none", np.zeros(1), np.ones(1))
    n = ids.size

    def counts(loader):
        seen = np.concatenate([y for _, y in loader.epoch(2)]).ravel().astype(int)
        return np.bincount(seen, minlength=n)

    streamed = counts(BatchLoader(pairs, *identity, 100, True, 1500, cache_mb=0.0, seed=3, bootstrap=7))
    cached = counts(BatchLoader(pairs, *identity, 100, True, 1500, cache_mb=64.0, seed=3, bootstrap=7))
    np.testing.assert_array_equal(streamed, cached)
    histogram = np.bincount(streamed, minlength=4)[:4] / n  # points taken 0, 1, 2, 3 times
    poisson = np.exp(-1.0) / np.array([1, 1, 2, 6])
    # 17 496 points: binomial noise ≈ 0.004; 0.0027 measured
    np.testing.assert_allclose(histogram, poisson, atol=0.015)
    assert abs(streamed.sum() - n) < 5 * np.sqrt(n)  # the resample's size: n ± √n
    other = counts(BatchLoader(pairs, *identity, 100, True, 1500, cache_mb=0.0, seed=3, bootstrap=8))
    assert np.mean(other == streamed) < 0.5  # another resample (two Poisson(1) draws agree 31 % of the time)


def test_ensemble_members_with_bootstrap_train_on_their_own_resamples(be2_catalog, tmp_path):
    settings = dict(epochs=1, descriptor={"plugin": "gaussian", "params": {}}, batch_size=256,
                    model={"plugin": "feedforward", "params": {"layers": [8]}})
    out = malaflow.train(config(be2_catalog, tmp_path / "bagged", ensemble=2, bootstrap=True, **settings),
                         progress=False)
    members = [json.loads((out / f"member-{k}" / "model.json").read_text())["metadata"]["config"] for k in (0, 1)]
    assert [(m["seed"], m["bootstrap"]) for m in members] == [(0, True), (1, True)]
    with pytest.raises(ParameterError, match="bootstrap must be true or false, got 'yes'"):
        malaflow.TrainingConfig(bootstrap="yes")


# --------------------------------------------------------------------------- training


def test_resumed_training_ends_with_the_same_weights(be2_catalog, tmp_path):
    """Interrupted after 4 of 7 epochs (checkpoints every 2) and resumed: the same
    weights, bit for bit, as an uninterrupted run — dropout on, so the RNG state counts."""
    settings = dict(epochs=7, checkpoint_every=2, early_stopping=0, descriptor={"plugin": "gaussian", "params": {}},
                    model={"plugin": "feedforward", "params": {"layers": [16, 16], "dropout": 0.1}}, batch_size=256)
    whole = malaflow.train(config(be2_catalog, tmp_path / "whole", **settings), progress=False)
    part = tmp_path / "part"
    malaflow.train(config(be2_catalog, part, **settings), max_epochs=4, progress=False)
    assert json.loads((part / "model.json").read_text())["metadata"]["epochs_done"] == 4
    malaflow.train(config(be2_catalog, part, **settings), progress=False)
    a = torch.load(whole / "weights.pt", weights_only=True)
    b = torch.load(part / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((p / "history.json").read_text()) for p in (whole, part)]
    assert [h["validation_loss"] for h in history[0]] == [h["validation_loss"] for h in history[1]]
    assert (part / "history.csv").read_text().count("\n") == 8  # header + 7 epochs


def test_a_full_disk_at_a_checkpoint_is_one_message_and_leaves_no_temporary(be2_catalog, tmp_path, monkeypatch):
    settings = dict(epochs=4, checkpoint_every=2, early_stopping=0, descriptor={"plugin": "gaussian", "params": {}},
                    model={"plugin": "feedforward", "params": {"layers": [8]}}, batch_size=256)
    cfg = config(be2_catalog, tmp_path / "run", **settings)
    malaflow.train(cfg, max_epochs=2, progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith(".checkpoint.pt.tmp"):
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0 (No space left on device)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(malaflow.MalaflowError, match=r"could not write the checkpoint of epoch 4 .* previous one is intact"):
        malaflow.train(cfg, progress=False)
    assert not (tmp_path / "run" / ".checkpoint.pt.tmp").exists()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_a_checkpoint_of_other_snapshots_is_not_continued(be2_catalog, tmp_path):
    """The selection {split: train} matches one snapshot more after the catalog changed: the
    finished run's weights belong to the old data and its scaling, so training into the same
    output is refused, not re-saved with scalers fitted to the new data."""
    import yaml as pyyaml

    shutil.copytree(be2_catalog.root, tmp_path / "data")
    cat = Catalog.load(tmp_path / "data" / "catalog.yaml")
    settings = dict(epochs=1, descriptor={"plugin": "gaussian", "params": {}}, batch_size=256,
                    model={"plugin": "feedforward", "params": {"layers": [8]}})
    malaflow.train(config(cat, tmp_path / "m", **settings), progress=False)
    doc = pyyaml.safe_load(cat.path.read_text())
    for record in doc["snapshots"]:
        if record["id"] == "be2-3":
            record["split"] = "train"
    cat.path.write_text(pyyaml.safe_dump(doc))
    before = (tmp_path / "m" / "model.json").read_bytes()
    with pytest.raises(MalaflowError, match=r"trained on other train snapshots: its selection \{'split': 'train'\} "
                                            r"matched 2 then, 3 now"):
        malaflow.train(config(cat, tmp_path / "m", **settings), progress=False)
    assert (tmp_path / "m" / "model.json").read_bytes() == before
    both = [{"ids": ["be2-0"]}, {"split": "train"}]  # a list of selections: their union, in order
    assert malaflow.training.select_ids(be2_catalog, both, "training") == ["be2-0", "be2-1"]


def test_ctrl_c_says_where_training_resumes(be2_catalog, tmp_path):
    """SIGINT mid-run: exit code 130 and one line naming the checkpoint to resume from."""
    import signal
    import time

    cfg = config(be2_catalog, tmp_path / "run", epochs=500, checkpoint_every=1, early_stopping=0,
                 descriptor={"plugin": "gaussian", "params": {}}, model={"plugin": "feedforward", "params": {"layers": [8]}})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "malaflow.cli", "train", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted: the checkpoint of epoch \d+ is in .*checkpoint\.pt; train again to resume "
                        r"from it \(the same weights\)", line), err
    assert "Traceback" not in err


def test_a_finished_training_continues_to_more_epochs(be2_catalog, tmp_path):
    """A finished 3-epoch run raised to 6 epochs (CLI --epochs) ends with the weights of one
    6-epoch run, bit for bit (a step schedule: it does not depend on the epoch count);
    another changed setting is refused by name, fewer epochs and a cosine schedule too."""
    settings = dict(checkpoint_every=5, early_stopping=0, descriptor={"plugin": "gaussian", "params": {}},
                    model={"plugin": "feedforward", "params": {"layers": [16]}}, batch_size=256, schedule="step",
                    schedule_patience=2)
    whole = malaflow.train(config(be2_catalog, tmp_path / "whole", epochs=6, **settings), progress=False)
    cfg = config(be2_catalog, tmp_path / "part", epochs=3, **settings)
    malaflow.train(cfg, progress=False)
    path = tmp_path / "part.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["train", str(path), "--epochs", "6"])
    assert result.exit_code == 0, result.output
    a, b = (torch.load(p / "weights.pt", weights_only=True) for p in (whole, tmp_path / "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "part" / "model.json").read_text())["metadata"]["epochs_done"] == 6
    with pytest.raises(malaflow.MalaflowError, match=r"learning_rate: 0.0003 then, 0.001 now"):
        malaflow.train({**cfg, "epochs": 8, "learning_rate": 1e-3}, progress=False)
    with pytest.raises(malaflow.MalaflowError, match="has 6 epochs done; epochs: 4 is fewer"):
        malaflow.train({**cfg, "epochs": 4}, progress=False)
    cosine = config(be2_catalog, tmp_path / "cosine", epochs=2, **{**settings, "schedule": "cosine"})
    malaflow.train(cosine, progress=False)
    with pytest.raises(malaflow.MalaflowError, match="cosine anneals over the 2 epochs"):
        malaflow.train({**cosine, "epochs": 4}, progress=False)


def test_be2_band_energy_error_and_cli(be2_catalog, tmp_path):
    """MALA's Be2 benchmark (train 0, 1 / validate 2 / test 3) with the settings of
    examples/train-be2.yaml (seeded), trained by `malaflow train` in its own process:
    measured here +1.40 meV/atom band energy, −0.09 meV Fermi level, 0.0016 relative
    density error (MALA 1.4 reaches 9.85 meV/atom with its example settings). The same
    run in a process whose floating-point history differs (other tests before it) ends
    at +6.9 meV/atom and +6.2 meV: one snapshot's errors move that much with the last
    bits of the arithmetic, so the bounds are 10× the band and density errors and the
    Fermi level's spread."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(config(be2_catalog, tmp_path / "model")))
    run = subprocess.run([sys.executable, "-m", "malaflow.cli", "train", str(cfg)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "validation:" in run.stdout and "be2-2" in run.stdout
    result = runner.invoke(app, ["test", str(tmp_path / "model"), "--catalog", str(be2_catalog.path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("be2-3"))
    mse, band, fermi, density = (float(v) for v in row.split()[1:5])
    print(f"\n  be2-3: band {band:+.3f} meV/atom, Fermi {fermi:+.3f} meV, density {density:.5f}")
    assert abs(band) < 14.0 and abs(fermi) < 10.0 and density < 0.016

    from ase.io import write

    ds = malaflow.open_snapshot(be2_catalog.store_path("be2-3"))
    atoms = malaflow.Snapshot.from_dataset(ds).atoms
    write(tmp_path / "be.xyz", atoms, format="extxyz")
    result = runner.invoke(app, ["predict", str(tmp_path / "model"), str(tmp_path / "be.xyz"),
                                 "--plot", str(tmp_path / "dos.png"), "-o", str(tmp_path / "pred.zarr")])
    assert result.exit_code == 0, result.output
    assert re.search(r"n_electrons\s+4\.0000", result.output) and (tmp_path / "dos.png").is_file()
    assert re.search(r"extrapolated\s+\d+\.\d% of the grid points", result.output)
    stored = malaflow.open_snapshot(tmp_path / "pred.zarr")
    assert stored.ldos.shape == (18, 18, 27, 11)


def test_config_errors(be2_catalog, tmp_path):
    with pytest.raises(ParameterError, match="unknown key.*epoch"):
        malaflow.TrainingConfig.load({"epoch": 3})
    with pytest.raises(ParameterError, match="optimizer"):
        malaflow.TrainingConfig.load({"optimizer": "lbfgs"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(malaflow.InputFileError, match="bad.yaml:"):
        malaflow.TrainingConfig.load(bad)
    with pytest.raises(malaflow.MalaflowError, match="matches no snapshot"):
        malaflow.train(config(be2_catalog, tmp_path / "m", train={"dataset": "nope"}), progress=False)


def test_config_values_of_the_wrong_type_are_named(tmp_path):
    """The typed YAML slips of a training config: one message naming the file and key,
    nothing written; YAML's string '3e-4' and a quoted '32' are the numbers they mean."""
    cases = {
        "epochs: six": "epochs: expected a whole number, got 'six'",
        "seed: abc": "seed: expected a whole number, got 'abc'",
        "descriptor: bispectrum": "descriptor: expected a mapping",
        "batch_size: 32.5": "batch_size: expected a whole number, got 32.5",
        "epochs: 2.7": "epochs: expected a whole number, got 2.7",
        "epochs: true": "epochs: expected a whole number, got True",
        "output: 12": "output: expected text, got 12",
    }
    path = tmp_path / "train.yaml"
    for line, message in cases.items():
        path.write_text(f"output: out\n{line}\n" if not line.startswith("output") else line + "\n")
        result = runner.invoke(app, ["train", str(path)])
        assert result.exit_code != 0 and f"training config {path}: {message}" in str(result.exception), line
        assert not (tmp_path / "out").exists()
    path.write_text("learning_rate: 3e-4\nbatch_size: '32'\n")
    loaded = malaflow.TrainingConfig.load(path)
    assert (loaded.learning_rate, loaded.batch_size) == (3e-4, 32)


# --------------------------------------------------------------------------- artifact, prediction


@pytest.fixture(scope="module")
def gaussian_model(be2_catalog, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "gauss"
    return malaflow.train(config(be2_catalog, out, epochs=5, descriptor={"plugin": "gaussian", "params": {}},
                                 model={"plugin": "feedforward", "params": {"layers": [32]}}), progress=False)


def test_artifact_round_trip_and_missing_plugin(gaussian_model, tmp_path):
    model = malaflow.load_model(gaussian_model)
    meta = json.loads((gaussian_model / "model.json").read_text())
    assert meta["descriptor"]["plugin"] == "gaussian" and meta["valence"] == {"Be": 2.0}
    assert meta["metadata"]["training_snapshots"] == ["be2-0", "be2-1"] and "torch" in meta["metadata"]["versions"]
    assert len(model.energies) == 11 and model.temperature == pytest.approx(299.986, abs=1e-3)
    broken = tmp_path / "broken"
    shutil.copytree(gaussian_model, broken)
    meta["descriptor"]["plugin"] = "soap"
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(PluginError, match="descriptor plugin 'soap'.*not installed"):
        malaflow.load_model(broken)


def test_a_damaged_model_folder_is_named(gaussian_model, be2_catalog, tmp_path):
    """Each way a model folder gets damaged: one message naming the file, from the API and
    from `malaflow predict` / `malaflow test` (no traceback), the folder left as it was."""
    weights = (gaussian_model / "weights.pt").read_bytes()
    meta = json.loads((gaussian_model / "model.json").read_text())
    wider = json.loads(json.dumps(meta))
    wider["model"]["params"]["layers"] = [64]
    damages = {
        "truncated weights": ("weights.pt", weights[: len(weights) // 2], "weights.pt: not readable as torch weights"),
        "random bytes": ("weights.pt", bytes(range(256)) * 8, "weights.pt: not readable as torch weights"),
        "empty weights": ("weights.pt", b"", "weights.pt: empty file"),
        "bad json": ("model.json", b'{"model": ', "model.json: not valid JSON"),
        "missing keys": ("model.json", json.dumps({k: v for k, v in meta.items() if k != "scalers"}).encode(),
                         "model.json: not a complete malaflow model description (no 'scalers')"),
        "layer mismatch": ("model.json", json.dumps(wider).encode(), "weights.pt: the weights do not fit the network"),
    }
    structure = tmp_path / "be2.xyz"
    malaflow.Snapshot.from_dataset(malaflow.open_snapshot(be2_catalog.store_path("be2-3"))).atoms.write(structure)
    for name, (file, content, message) in damages.items():
        folder = tmp_path / name.replace(" ", "-")
        shutil.copytree(gaussian_model, folder)
        (folder / file).write_bytes(content)
        before = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
        with pytest.raises(malaflow.StoreError, match=re.escape(message)):
            malaflow.load_model(folder)
        for args in (["predict", str(folder), str(structure)],
                     ["test", str(folder), "--catalog", str(be2_catalog.path)]):
            result = runner.invoke(app, args)
            assert result.exit_code != 0 and message in str(result.exception), (name, args, result.output)
        assert sorted((p.name, p.stat().st_size) for p in folder.iterdir()) == before


def test_prediction_is_chunkwise_and_equals_the_stored_path(gaussian_model, be2_catalog):
    model = malaflow.load_model(gaussian_model)
    store = be2_catalog.store_path("be2-3")
    ds = malaflow.open_snapshot(store)
    lazy = model.predict(ds, chunks=9)
    assert lazy.ldos.data.numblocks == (2, 2, 3, 1)
    stored = model.predict(ds, descriptors=malaflow.open_descriptors(store, "gaussian"))
    # computed (float64) vs stored (float32) descriptors: inputs agree to ~1e-7 relative
    np.testing.assert_allclose(lazy.ldos.values, stored.ldos.values, rtol=1e-4, atol=1e-6 * float(abs(stored.ldos).max()))
    errors = evaluate_store(model, store)
    # the evaluation's errors are the observables of the two LDOS, taken apart here
    ours, dft = malaflow.observables(lazy), malaflow.observables(ds)
    assert errors.band_energy_mev_per_atom == pytest.approx(1000 * (ours.band_energy - dft.band_energy) / 2, abs=1e-3)
    assert errors.fermi_mev == pytest.approx(1000 * (ours.fermi_energy - dft.fermi_energy), abs=1e-3)
    n_ours = malaflow.get_plugin("targets", "ldos")().density(lazy, ours.fermi_energy).values
    n_dft = malaflow.get_plugin("targets", "ldos")().density(ds, dft.fermi_energy).values
    assert errors.density_relative == pytest.approx(np.abs(n_ours - n_dft).sum() / n_dft.sum(), rel=1e-4)


def test_model_knows_where_it_extrapolates(gaussian_model, be2_catalog):
    """The training descriptors lie inside the recorded range by construction; in a cell
    stretched by half, most grid points are farther from every atom than any training
    point was, so the Gaussian density (the feature) falls below its training minimum."""
    model = malaflow.load_model(gaussian_model)
    train = malaflow.open_descriptors(be2_catalog.store_path("be2-0"), "gaussian")
    assert model.outside_training(train) == 0.0
    ds = malaflow.open_snapshot(be2_catalog.store_path("be2-3"))
    atoms = malaflow.Snapshot.from_dataset(ds).atoms
    atoms.set_cell(atoms.cell * 1.5, scale_atoms=True)
    squeezed = malaflow.compute_descriptors(atoms, "gaussian", grid_shape=(18, 18, 27), progress=False)
    assert model.outside_training(squeezed) > 0.5
    assert 0.0 <= evaluate_store(model, be2_catalog.store_path("be2-3")).outside_training < 0.05


def test_doubtful_predictions_are_flagged(gaussian_model, be2_catalog):
    """Atoms 0.01 Å apart, or a 2×2×2 grid, give an LDOS all the same; the prediction says
    why not to trust it, and the Calculator keeps that with its results, beside the share of
    extrapolated grid points (computed in the same pass as the DOS)."""
    model = malaflow.load_model(gaussian_model)
    ds = malaflow.open_snapshot(be2_catalog.store_path("be2-3"))
    atoms = malaflow.Snapshot.from_dataset(ds).atoms
    trained = model.metadata["min_distance"]
    assert trained == pytest.approx(min(malaflow.trust.shortest_distance(
        malaflow.open_snapshot(be2_catalog.store_path(i))["positions"].values, atoms.cell) for i in ("be2-0", "be2-1")))
    assert 1.5 < trained < 2.3  # Be–Be in hcp Be: 2.22 Å, less the thermal displacements
    assert model.predict(atoms).attrs["warnings"] == []
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.01, 0.0, 0.0]
    [warning] = model.predict(close).attrs["warnings"]
    assert "atoms 0.010 Å apart" in warning
    [warning] = model.predict(atoms, grid_shape=(2, 2, 2)).attrs["warnings"]
    assert "coarser than the training grid" in warning
    close.calc = malaflow.Calculator(model)
    close.get_potential_energy()
    assert close.calc.results["warnings"] and 0.0 <= close.calc.results["extrapolated"] <= 1.0
    obs, share, _ = malaflow.trust.observables_with_trust(model.predict(atoms))
    assert obs.band_energy == pytest.approx(malaflow.observables(model.predict(atoms)).band_energy, rel=1e-12)
    assert share == pytest.approx(model.outside_training(malaflow.compute_descriptors(
        atoms, "gaussian", grid_shape=(18, 18, 27), progress=False)), abs=1e-12)


def test_a_supercell_prediction_is_the_tiled_cell_prediction(gaussian_model):
    """Size consistency: descriptors are local and periodic, so the predicted LDOS of a
    perfect 2×2×1 hcp supercell is the prediction of its 2-atom cell tiled, and the band
    energy per atom and the Fermi level are the same."""
    from ase.build import bulk

    model = malaflow.load_model(gaussian_model)
    cell = bulk("Be", "hcp", a=2.26, c=3.57)
    small = model.predict(cell, grid_shape=(18, 18, 27), chunks=9)
    big = model.predict(cell.repeat((2, 2, 1)), chunks=12)
    assert big.attrs["grid_shape"] == [36, 36, 27]  # the training spacing
    tiled = np.tile(small.ldos.values, (2, 2, 1, 1))
    np.testing.assert_allclose(big.ldos.values, tiled, rtol=1e-6, atol=1e-9 * float(abs(tiled).max()))
    a, b = malaflow.observables(small), malaflow.observables(big)
    assert b.n_electrons == pytest.approx(4 * a.n_electrons, rel=1e-12)
    assert b.fermi_energy == pytest.approx(a.fermi_energy, abs=1e-6)
    assert b.band_energy / 8 == pytest.approx(a.band_energy / 2, abs=1e-6)


def test_calculator_caches_per_configuration(gaussian_model, be2_catalog):
    ds = malaflow.open_snapshot(be2_catalog.store_path("be2-3"))
    atoms = malaflow.Snapshot.from_dataset(ds).atoms
    calc = malaflow.Calculator(str(gaussian_model))
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    # the UPF was copied beside the model at training, so the energy is the total one
    terms = malaflow.energy_terms(calc.model.predict(ds, precision="float64"))
    assert calc.results["kind"] == "total" and (Path(gaussian_model) / "Be.pbe-n-rrkjus_psl.1.0.0.UPF").is_file()
    assert energy == pytest.approx(terms.internal_energy, rel=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(terms.total_energy, rel=1e-9)
    assert atoms.get_potential_energy() == energy and calc.evaluations == 1
    atoms.positions[0] += [0.05, 0.0, 0.0]
    assert atoms.get_potential_energy() != energy and calc.evaluations == 2


def test_training_as_a_dask_task(be2_catalog, tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = config(be2_catalog, tmp_path / "remote", epochs=2, descriptor={"plugin": "gaussian", "params": {}},
                 model={"plugin": "feedforward", "params": {"layers": [8]}})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            path = malaflow.train(cfg, client=client)
    local = malaflow.train({**cfg, "output": str(tmp_path / "local")}, progress=False)
    remote_loss = json.loads((Path(path) / "history.json").read_text())[-1]["validation_loss"]
    local_loss = json.loads((local / "history.json").read_text())[-1]["validation_loss"]
    assert remote_loss == pytest.approx(local_loss, rel=1e-4)


def test_large_grid_prediction_in_bounded_memory(gaussian_model, be2_catalog, tmp_path):
    """A 12×12×8 supercell of a Be2 snapshot on a 216³ grid (1.0e7 points) predicted
    chunk by chunk in a subprocess, on the synchronous scheduler (so the memory in flight
    depends on the code, not on the machine's load): the prediction raises the peak RSS
    by a few chunks' working sets (a 48³ chunk: gaussian feature, 32 hidden activations
    and 11 LDOS values in float64, 39 MB; 101 MB measured), where the hidden activations
    for the whole grid alone would take 2.6 GB. The supercell is the cell repeated, so the band energy per
    atom must equal the cell's."""
    script = f"""
import json, sys, dask, malaflow
sys.path.insert(0, {str(Path(__file__).parent)!r})
from peak_memory import peak_mb, reset_peak
model = malaflow.load_model({str(gaussian_model)!r})
ds = malaflow.open_snapshot({str(be2_catalog.store_path("be2-3"))!r})
atoms = malaflow.Snapshot.from_dataset(ds).atoms
small = malaflow.observables(model.predict(atoms, chunks=32))
before = reset_peak()
with dask.config.set(scheduler="synchronous"):
    big = model.predict(atoms.repeat((12, 12, 8)), chunks=48)
    assert big.ldos.shape[:3] == (216, 216, 216), big.ldos.shape
    obs = malaflow.observables(big)
raised = peak_mb() - before
print(json.dumps([small.band_energy / 2, obs.band_energy / len(big.atom), obs.n_electrons, raised]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    per_atom_small, per_atom_big, electrons, raised_mb = json.loads(run.stdout.strip().splitlines()[-1])
    assert electrons == pytest.approx(2 * 2304, rel=1e-9)
    assert per_atom_big == pytest.approx(per_atom_small, rel=1e-7)
    print(f"peak RSS raised by {raised_mb:.0f} MB for 1.0e7 points")
    chunk_mb = 48**3 * (1 + 32 + 11) * 8 / 2**20
    assert raised_mb < 10 * chunk_mb, f"peak RSS raised by {raised_mb:.0f} MB"


SYNTHETIC = '''
import json, sys
from dataclasses import dataclass
import numpy as np
import malaflow, malaflow.plugins
from malaflow.descriptors import Descriptor
from malaflow.params import param
from malaflow.catalog import Catalog

@dataclass
class WaveParams:
    k: float = param(1.0, "wave number")

class Waves(Descriptor):
    """16 plane waves of the position: cheap, smooth features for a synthetic dataset."""
    name = "waves"
    Params = WaveParams
    def n_features(self, structure): return 16
    def halo(self): return 0.0
    def compute(self, points, positions, numbers, structure):
        k = self.params.k * np.arange(1, 9)
        return np.concatenate([np.sin(points[:, :1] * k), np.cos(points[:, 1:2] * k)], axis=1)

class Module:
    @malaflow.hookimpl
    def malaflow_descriptors(self): return [Waves]

malaflow.plugins.register(Module(), "synthetic")
root, cache_mb = sys.argv[1], float(sys.argv[2])
cat = Catalog.load(root + "/catalog.yaml")
path = malaflow.train(dict(output=root + f"/model-{cache_mb:g}", catalog=str(cat.path), epochs=1,
    descriptor={"plugin": "waves", "params": {}}, model={"plugin": "feedforward", "params": {"layers": [32]}},
    batch_size=1024, cache_mb=cache_mb, shuffle_buffer=16384, early_stopping=0), progress=False)
print(json.dumps(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024))
'''


def test_streaming_trains_a_dataset_larger_than_the_memory_it_uses(tmp_path):
    """Three synthetic 64³ snapshots (32-point LDOS, 16 features: 150 MB as float32).
    Trained once streaming (cache limit 20 MB, buffer 16 384 points) and once cached,
    each in a fresh process: the streaming run's peak memory is lower by most of the
    dataset, i.e. it never holds it."""

    cat = Catalog(tmp_path / "catalog.yaml")
    rng = np.random.default_rng(0)
    energies = np.linspace(-5, 10, 32)
    for i, split in enumerate(["train", "train", "validation"]):
        cell = np.diag([8.0, 8.0, 8.0])
        snap = malaflow.Snapshot(
            positions=rng.random((4, 3)) * 8.0, numbers=[4, 4, 4, 4], cell=cell, grid_shape=(64, 64, 64),
            energies=energies, ldos=rng.random((64, 64, 64, 32), dtype=np.float32) * 0.01,
            temperature=300.0, n_electrons=8.0, code="synthetic",
        )
        store = malaflow.write_snapshot(snap, tmp_path / "stores" / f"s{i}.zarr")
        cat.records.append(malaflow.catalog.SnapshotRecord(id=f"s{i}", code="synthetic", reader="mala", source="none", store=cat.relative(store),
                                                           split=split, n_atoms=4, elements=["Be"]))
    cat.save()
    script = tmp_path / "synthetic.py"
    script.write_text(SYNTHETIC)
    peaks = {}
    for cache_mb in (20, 10_000):
        run = subprocess.run([sys.executable, str(script), str(tmp_path), str(cache_mb)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        peaks[cache_mb] = json.loads(run.stdout.strip().splitlines()[-1])
    dataset_mb = 3 * 64**3 * (32 + 16) * 4 / 2**20
    print(f"peak RSS streaming {peaks[20]:.0f} MB, cached {peaks[10_000]:.0f} MB, dataset {dataset_mb:.0f} MB")
    assert peaks[10_000] - peaks[20] > 0.6 * dataset_mb, peaks
