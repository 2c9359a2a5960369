"""Pre-shuffled training data: a permutation of the training points, mixed across the
snapshots, with the snapshots' statistics, in bounded buckets; training reads it."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import malaflow
from malaflow.cli import app
from malaflow.data import Scaler, SnapshotPair
from malaflow.shuffled_data import shuffle_training_data

from conftest import training_config

SETTINGS = dict(descriptor={"plugin": "gaussian", "params": {}}, epochs=2, early_stopping=0, batch_size=256,
                model={"plugin": "feedforward", "params": {"layers": [16]}})


def rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points as rows of inputs and outputs, in a canonical (lexicographic) order."""
    joined = np.concatenate([x, y], axis=1)
    return joined[np.lexsort(joined.T[::-1])]


def test_a_permutation_mixed_across_snapshots_with_the_same_statistics(be2_catalog, tmp_path):
    cfg = training_config(be2_catalog, tmp_path / "model", **SETTINGS)
    out = shuffle_training_data(cfg, tmp_path / "shuffled.zarr", memory_mb=0.05, progress=False)
    root = zarr.open_group(out, mode="r")
    assert root.attrs["buckets"] > 5  # 0.05 MB buckets: the external shuffle, not one in-memory sort
    x, y = root["inputs"][:], root["outputs"][:]
    pairs = [SnapshotPair.open(be2_catalog.store_path(i), "gaussian", "ldos") for i in ("be2-0", "be2-1")]
    originals = [tuple(np.asarray(a).reshape(-1, a.shape[-1]).astype(np.float32) for a in (p.inputs, p.outputs))
                 for p in pairs]
    np.testing.assert_array_equal(rows(x, y), rows(np.concatenate([o[0] for o in originals]),
                                                   np.concatenate([o[1] for o in originals])))
    # mixed: every 4096-row block holds points of both snapshots, in about equal shares
    owner = {row.tobytes(): k for k, o in enumerate(originals) for row in np.concatenate(o, axis=1)}
    source = np.array([owner[row.tobytes()] for row in np.concatenate([x, y], axis=1)])
    shares = [source[i:i + 4096].mean() for i in range(0, len(source) - 4096, 4096)]
    assert all(0.4 < s < 0.6 for s in shares), shares
    for kind in ("standard", "minmax"):
        flat = [p.flat()[0] for p in pairs]
        a = Scaler.fit(kind, flat)
        b = Scaler.fit(kind, [da.from_array(x, chunks=(5000, x.shape[1]))])
        np.testing.assert_allclose(b.shift, a.shift, rtol=1e-12)  # achieved: equal (float64 sums of float32 values)
        np.testing.assert_allclose(b.scale, a.scale, rtol=1e-12)
    again = shuffle_training_data(cfg, tmp_path / "again.zarr", memory_mb=0.05, progress=False)
    np.testing.assert_array_equal(zarr.open_group(again, mode="r")["inputs"][:], x)  # seeded


def test_training_reads_the_shuffled_set(be2_catalog, tmp_path):
    config = tmp_path / "train.yaml"
    cfg = training_config(be2_catalog, tmp_path / "model", **SETTINGS)
    config.write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["shuffle", str(config), "-o", str(tmp_path / "mixed.zarr")])
    assert result.exit_code == 0, result.output
    config.write_text(json.dumps({**cfg, "shuffled": "mixed.zarr"}))  # relative to the config
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]
    other = {**cfg, "shuffled": str(tmp_path / "mixed.zarr"), "train": {"ids": ["be2-0"]},
             "output": str(tmp_path / "other")}
    with pytest.raises(malaflow.MalaflowError, match="shuffled from other training data.*snapshots"):
        malaflow.train(other, progress=False)
    with pytest.raises(malaflow.StoreError, match="not a shuffled training set"):
        malaflow.train({**other, "shuffled": str(tmp_path)}, progress=False)
