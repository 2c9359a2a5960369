"""Active learning: rounds of ensemble training, candidates ranked by σ, DFT of the chosen
ones; recorded round by round and resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import malaflow
from malaflow.active_learning import (LearnConfig, choose, dft_core_seconds, held_out_errors, learn, rounds_table,
                                      sample_candidates, score_candidates)
from malaflow.errors import ElectronCountError, MalaflowError, ParameterError
from malaflow.generate import generate

from conftest import be_config, training_config

BE = {"name": "Be", "crystalstructure": "hcp", "a": 2.26, "c": 3.57}


def test_dft_cost_is_read_from_the_timing_lines(tmp_path):
    (tmp_path / "scf.out").write_text("     init_run     :      0.50s CPU      0.60s WALL\n"
                                      "     PWSCF        :   1m23.45s CPU   1m30.00s WALL\n")
    (tmp_path / "ldos.out").write_text("     PP           :  1h 2m 3.00s CPU  1h 2m 9.00s WALL\n")
    (tmp_path / "other.txt").write_text("     PWSCF        :   9.00s CPU\n")
    assert dft_core_seconds(tmp_path) == pytest.approx(83.45 + 3723.0)
    assert dft_core_seconds(tmp_path, ranks=4) == pytest.approx(4 * (83.45 + 3723.0))


def test_choice_by_sigma_or_at_random():
    sigma = np.array([3.0, 9.0, 1.0, 9.0, 5.0])
    assert choose(sigma, 3, "sigma", np.random.default_rng(0)) == [1, 3, 4]
    draws = [tuple(choose(sigma, 2, "random", np.random.default_rng([0, r]))) for r in range(20)]
    assert len(set(draws)) > 3 and all(len(set(d)) == 2 for d in draws)
    assert choose(sigma, 9, "sigma", np.random.default_rng(0)) == [1, 3, 4, 0, 2]


def test_candidates_are_fresh_each_round():
    spec = {"bulk": BE, "count": 2, "seed": 5, "displacement": {"temperature": 298}}
    a, b = sample_candidates([spec], 0), sample_candidates([spec], 1)
    assert len(a) == 2 and not np.allclose(a[0].positions, b[0].positions)
    assert np.array_equal(sample_candidates([spec], 0)[1].positions, a[1].positions)  # reproducible
    other_loop = sample_candidates([spec], 0, loop_seed=1)
    assert not any(np.allclose(o.positions, c.positions) for o in other_loop for c in a + b)
    own = malaflow.generate.configurations(spec)  # the spec's own seed (the generation's) is never drawn
    assert not any(np.allclose(own[0].positions, c.positions) for c in a + b)


def test_a_held_out_cell_whose_prediction_cannot_place_its_electrons_is_recorded_as_failed(monkeypatch):
    """Far from its data a model may predict a DOS that holds fewer electrons than the cell
    has (round 1 of a learning benchmark loop, on a cell displaced 3×): the round records the
    cell as failed and goes on, its means over the other cells."""
    from malaflow import evaluation
    from malaflow.evaluation import Errors

    def evaluate_store(model, store, name=""):
        if name == "far":
            raise ElectronCountError("4.0 electrons cannot be placed: the DOS holds between 0 and 3.87 electrons")
        return Errors(snapshot=name, ldos_mse=0.0, band_energy_mev_per_atom={"a": -30.0, "b": 10.0}[name],
                      fermi_mev=0.0, density_relative=0.0, n_atoms=2, outside_training=0.1,
                      band_energy_sigma_mev_per_atom={"a": 20.0, "b": 40.0}[name])

    monkeypatch.setattr(evaluation, "evaluate_store", evaluate_store)
    record = held_out_errors(None, {"a": "a.zarr", "far": "far.zarr", "b": "b.zarr"})
    assert record["held_out_failed"] == 1 and "3.87 electrons" in record["held_out"]["far"]["failed"]
    assert np.isnan(record["held_out"]["far"]["error"]) and record["held_out"]["far"]["sigma"] == np.inf
    assert (record["held_out_error"], record["held_out_sigma"]) == (20.0, 30.0)
    table = rounds_table([{"round": 0, "training_cells": 2, "dft_core_minutes": 0.0, "acquired": [], **record}])
    assert "(1 held-out failed)" in table


def test_learning_config_checks(tmp_path):
    with pytest.raises(ParameterError, match="selection must be one of"):
        LearnConfig(output="o", generation="g", training="t", candidates=[{"bulk": BE}], selection="best")
    with pytest.raises(ParameterError, match="candidates: give at least one"):
        LearnConfig(output="o", generation="g", training="t")
    with pytest.raises(ParameterError, match="held_out: a list of selections"):
        LearnConfig(output="o", generation="g", training="t", candidates=[{"bulk": BE}], held_out=["x"])


def write_configs(root):
    """The configs of a 2-round loop (2-member ensembles, 1 cell per round from 4
    candidates) starting from 2 training cells, with 1 validation cell and 1 held-out cell
    displaced twice as far."""
    start = be_config(root, count=3, split={"train": 2, "validation": 1})
    hot = be_config(root, count=1, split="test")
    hot["dataset"] = "be2-hot"
    hot["structures"] = {**hot["structures"], "seed": 3, "displacement": {"temperature": 1200.0}}
    (root / "generate.yaml").write_text(yaml.safe_dump(start))
    (root / "generate-hot.yaml").write_text(yaml.safe_dump(hot))
    train = training_config(malaflow.Catalog(root / "catalog.yaml"), root / "unused", ensemble=2, epochs=2,
                            early_stopping=0, batch_size=256, descriptor={"plugin": "gaussian", "params": {}},
                            model={"plugin": "feedforward", "params": {"layers": [16]}},
                            train={"dataset": "be2", "split": "train"}, validation={"split": "validation"})
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    learn_config = {
        "output": str(root / "learn"), "generation": str(root / "generate.yaml"),
        "training": str(root / "train.yaml"), "per_round": 1, "rounds": 2, "dataset": "be2-learned",
        "candidates": [{"bulk": BE, "count": 2, "seed": 11, "displacement": {"temperature": 298.0}},
                       {"bulk": BE, "count": 2, "seed": 12, "displacement": {"temperature": 1200.0}}],
        "held_out": [{"dataset": "be2-hot"}], "warm_start": True, "seed": 1,
    }
    (root / "learn.yaml").write_text(yaml.safe_dump(learn_config))
    return root


@pytest.fixture
def learning_setup(quantum_espresso, tmp_path):
    root = write_configs(tmp_path)
    for name in ("generate.yaml", "generate-hot.yaml"):
        assert not generate(root / name, progress=False)["failed"]
    return root


def test_a_learning_loop_records_its_rounds_and_resumes_after_a_kill(learning_setup):
    root = learning_setup
    rounds = root / "learn" / "rounds.json"
    proc = subprocess.Popen([sys.executable, "-m", "malaflow.cli", "learn", str(root / "learn.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (rounds.is_file() and json.loads(rounds.read_text())["rounds"]):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "round 0 did not finish in 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # in round 1
    proc.wait()
    first = json.loads(rounds.read_text())["rounds"]
    assert len(first) == 1 and len(first[0]["acquired"]) == 1

    run = subprocess.run([sys.executable, "-m", "malaflow.cli", "learn", str(root / "learn.yaml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "stopped: 2 rounds done" in run.stdout and "held-out |Δ|" in run.stdout
    records = json.loads(rounds.read_text())["rounds"]
    assert records[0] == first[0]  # the recorded round stays as it was
    assert [r["training_cells"] for r in records] == [2, 3, 4]
    assert [len(r["acquired"]) for r in records] == [1, 1, 0]
    cat = malaflow.Catalog.load(root / "catalog.yaml")
    learned = [r.id for r in cat.query(dataset="be2-learned")]
    assert sorted(learned) == sorted(records[0]["acquired"] + records[1]["acquired"])
    assert len(list((root / "generated" / "raw").glob("be2-learned-*"))) == 2  # each cell's DFT ran once
    # DFT minutes of the acquired cells each round trains on, and of its own acquisition
    assert records[0]["dft_core_minutes"] == 0 and records[0]["acquired_core_minutes"] > 0
    assert records[2]["dft_core_minutes"] == pytest.approx(sum(r["acquired_core_minutes"] for r in records[:2]))
    for r in records:
        assert set(r["held_out"]) == {cat.query(dataset="be2-hot")[0].id}
        assert r["held_out_sigma"] > 0 and r["held_out_error"] > 0
    # round 0 chose the candidate its own ensemble was least sure of
    model = malaflow.load_model(root / "learn" / "round-0" / "model")
    config = LearnConfig.load(root / "learn.yaml")
    sigma, share = score_candidates(model, sample_candidates(config.candidates, 0, config.seed))
    assert records[0]["chosen_sigma"] == [pytest.approx(sigma.max(), rel=1e-9)]
    assert records[0]["candidate_sigma_max"] == pytest.approx(sigma.max(), rel=1e-9)
    assert (root / "learn" / "learning.png").stat().st_size > 10_000
    # round 1's members started from round 0's (warm_start: true), with the loop's seeds
    members = [malaflow.load_model(root / "learn" / f"round-{r}" / "model").members[1] for r in (0, 1)]
    assert members[0].metadata["config"]["warm_start"] is None
    assert members[1].metadata["config"]["warm_start"] == str(root / "learn" / "round-0" / "model" / "member-1")
    assert members[1].metadata["config"]["seed"] == 100_001

    # one round more asked for: the last round goes on to acquire, and a new one ends the loop
    config = yaml.safe_load((root / "learn.yaml").read_text())
    (root / "learn.yaml").write_text(yaml.safe_dump({**config, "rounds": 3}))
    longer = learn(root / "learn.yaml", progress=False)
    assert longer[:2] == records[:2] and [len(r["acquired"]) for r in longer] == [1, 1, 1, 0]
    assert longer[-1]["stopped"] == "3 rounds done" and longer[-1]["training_cells"] == 5
    # another loop in the same output is refused, not taken for this one
    (root / "learn.yaml").write_text(yaml.safe_dump({**config, "rounds": 3, "warm_start": False}))
    with pytest.raises(MalaflowError, match=r"other settings \(warm_start: True then, False now\)"):
        learn(root / "learn.yaml", progress=False)
    # other held-out cells only observe: every round is re-scored with its kept model, nothing retrained
    weights = sorted((root / "learn").glob("round-*/model/member-*/weights.pt"))
    stamps = [w.stat().st_mtime_ns for w in weights]
    (root / "learn.yaml").write_text(yaml.safe_dump({**config, "rounds": 3, "held_out": [{"split": "validation"}]}))
    rescored = learn(root / "learn.yaml", progress=False)
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    validation = {r.id: cat.store_path(r.id) for r in cat.query(split="validation")}
    assert all(set(r["held_out"]) == set(validation) for r in rescored)
    for r, before in zip(rescored, longer):
        assert {k: v for k, v in r.items() if not k.startswith("held_out")} == \
            {k: v for k, v in before.items() if not k.startswith("held_out")}
    again = held_out_errors(malaflow.load_model(root / "learn" / "round-2" / "model"), validation)
    assert rescored[2]["held_out_error"] == pytest.approx(again["held_out_error"], rel=1e-9) and again["held_out_error"] > 0


def test_learning_needs_an_ensemble(tmp_path):
    root = write_configs(tmp_path)
    train = yaml.safe_load((root / "train.yaml").read_text())
    (root / "train.yaml").write_text(yaml.safe_dump({**train, "ensemble": 1}))
    with pytest.raises(ParameterError, match="trains one network; candidates are ranked by an ensemble's spread"):
        learn(root / "learn.yaml", progress=False)
