"""The plugin registry: built-ins and third-party plugins through one entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import malaflow
from malaflow import plugins
from malaflow.errors import PluginError

THIRD_PARTY = '''
import numpy as np
import malaflow

class NearestAtom:
    """Distance from each point to the nearest atom (no periodic images): a toy descriptor."""
    name = "nearest_atom"
    def compute(self, positions, points):
        d = np.linalg.norm(points[:, None, :] - positions[None, :, :], axis=-1)
        return d.min(axis=1)[:, None]

@malaflow.hookimpl
def malaflow_descriptors():
    return [NearestAtom]
'''


def make_distribution(root: Path, dist: str, module: str, source: str, ep_name: str) -> None:
    """Lay out an installed distribution (module + dist-info with an entry point) in root.

    This is what `pip install` leaves in site-packages; putting root on sys.path makes
    importlib.metadata find it exactly as it finds an installed package.
    """
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(f"[malaflow]\n{ep_name} = {module}\n")


@pytest.fixture()
def fresh_registry(monkeypatch):
    """Re-read the entry points after a test changed sys.path; restore afterwards."""
    yield lambda: plugins.registry(reload=True)
    monkeypatch.undo()
    plugins.registry(reload=True)


def test_builtin_readers_come_through_entry_points():
    infos = {p.name: p for p in malaflow.list_plugins("readers")}
    assert {"mala", "qe", "vasp"} <= set(infos)
    assert infos["qe"].package == "malaflow"
    assert infos["qe"].version == malaflow.__version__
    assert infos["qe"].cls.__module__ == "malaflow_plugins.readers.qe"


def test_third_party_descriptor_appears_and_runs(tmp_path, monkeypatch, fresh_registry):
    make_distribution(tmp_path, "toy-descriptors", "toy_descriptors", THIRD_PARTY, "toy")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_registry()
    (info,) = [p for p in malaflow.list_plugins("descriptors") if p.name == "nearest_atom"]
    assert (info.package, info.version, info.kind) == ("toy-descriptors", "0.3.1", "descriptors")
    cls = malaflow.get_plugin("descriptors", "nearest_atom")
    positions = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    points = np.array([[1.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(cls().compute(positions, points)[:, 0], [1.0, 4.0])


def test_cli_lists_third_party_plugin(tmp_path):
    make_distribution(tmp_path, "toy-descriptors", "toy_descriptors", THIRD_PARTY, "toy")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "malaflow.cli", "plugins"], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("nearest_atom"))
    assert "descriptors" in line and "toy-descriptors" in line and "0.3.1" in line
    assert any(l.startswith("qe ") for l in out.splitlines())


def test_broken_plugin_warns_and_others_load(tmp_path, monkeypatch, fresh_registry):
    make_distribution(tmp_path, "broken-plugin", "broken_plugin", "import does_not_exist_anywhere\n", "broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match=r"'broken'.*broken-plugin.*No module named 'does_not_exist_anywhere'"):
        fresh_registry()
    assert {"mala", "qe", "vasp"} <= {p.name for p in malaflow.list_plugins("readers")}


def test_class_without_name_is_skipped_with_warning(tmp_path, monkeypatch, fresh_registry):
    source = "import malaflow\nclass Nameless: pass\n@malaflow.hookimpl\ndef malaflow_models():\n    return [Nameless]\n"
    make_distribution(tmp_path, "nameless", "nameless_plugin", source, "nameless")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_registry()
    with pytest.warns(RuntimeWarning, match="no string attribute 'name'"):
        assert [p.name for p in malaflow.list_plugins("models")] == ["feedforward"]


def test_trace_env_prints_hook_calls(tmp_path):
    env = dict(os.environ, MALAFLOW_TRACE_PLUGINS="1")
    err = subprocess.run(
        [sys.executable, "-m", "malaflow.cli", "plugins"], env=env, capture_output=True, text=True, check=True
    ).stderr
    assert "[malaflow trace] qe.malaflow_readers() -> ['qe']" in err


def test_unknown_plugin_is_a_clear_error():
    with pytest.raises(PluginError, match=r"no reader plugin named 'castep'.*installed: mala, qe, vasp"):
        malaflow.get_plugin("readers", "castep")
    with pytest.raises(PluginError, match="unknown plugin kind"):
        malaflow.list_plugins("potatoes")
