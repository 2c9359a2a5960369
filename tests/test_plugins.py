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
from dataclasses import dataclass
import numpy as np
import malaflow

@dataclass
class NoParams:
    pass

class NearestAtom(malaflow.Descriptor):
    """Distance from each point to the nearest atom (periodic images as given): a toy descriptor."""
    name = "nearest_atom"
    Params = NoParams
    def n_features(self, structure):
        return 1
    def halo(self):
        return 10.0
    def compute(self, points, positions, numbers, structure):
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
    np.testing.assert_allclose(cls().compute(points, positions, None, None)[:, 0], [1.0, 4.0])


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


# ------------------------------------------------------------------ what the registry checks


class _Malformed(malaflow.Descriptor):
    """A descriptor that forgot compute() and halo()."""

    name = "half_done"

    def n_features(self, structure):
        return 1


class _LookAlike(malaflow.get_plugin("descriptors", "gaussian")):
    """Same name as the built-in gaussian descriptor."""


class _InProcessPlugin:
    @malaflow.hookimpl
    def malaflow_descriptors(self):
        return [_Malformed, _LookAlike]


def test_malformed_and_clashing_plugins_warn_and_the_cli_still_works(fresh_registry):
    from typer.testing import CliRunner

    from malaflow.cli import app

    fresh_registry()
    plugins.register(_InProcessPlugin(), name="notebook-plugin")
    with pytest.warns(RuntimeWarning) as caught:
        infos = {p.name: p for p in malaflow.list_plugins("descriptors")}
    messages = [str(w.message) for w in caught]
    assert any("'notebook-plugin'" in m and "_Malformed" in m and "does not implement halo, compute" in m
               for m in messages), messages
    assert any("two descriptors named 'gaussian'" in m and "(in-process)" in m and "package malaflow" in m
               for m in messages), messages
    assert "half_done" not in infos
    assert infos["gaussian"].cls is _LookAlike  # rule: in-process beats the built-in
    assert {"bispectrum", "bispectrum_torch"} <= set(infos)
    runner = CliRunner()
    for command in (["plugins"], ["descriptors", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "bispectrum_torch" in result.output


def test_clash_between_packages_follows_the_documented_rule(tmp_path, monkeypatch, fresh_registry):
    target = '''
import malaflow
class Replacement(malaflow.Target):
    """An LDOS target a package ships to replace the built-in one."""
    name = "ldos"
    variable = "ldos"
    def dos(self, ds):
        return ds["ldos"].sum(dim=("x", "y", "z"))
@malaflow.hookimpl
def malaflow_targets():
    return [Replacement]
'''
    for dist, module in (("zz-targets", "zz_targets"), ("aa-targets", "aa_targets")):
        make_distribution(tmp_path, dist, module, target, module)
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_registry()
    with pytest.warns(RuntimeWarning, match="two targets named 'ldos'") as caught:
        info = {p.name: p for p in malaflow.list_plugins("targets")}["ldos"]
    assert info.package == "aa-targets"  # third-party beats built-in; between packages, by name
    named = " ".join(str(w.message) for w in caught)
    assert "zz-targets" in named and "aa-targets" in named and "package malaflow" in named


def test_disable_plugins_by_entry_point_or_class_name(monkeypatch, fresh_registry):
    monkeypatch.setenv("MALAFLOW_DISABLE_PLUGINS", "gaussian, dos")
    fresh_registry()
    assert "gaussian" not in {p.name for p in malaflow.list_plugins("descriptors")}
    targets = {p.name for p in malaflow.list_plugins("targets")}
    assert "dos" not in targets and "ldos" in targets  # one class of a module switched off
    with pytest.raises(PluginError, match="no descriptor plugin named 'gaussian'"):
        malaflow.get_plugin("descriptors", "gaussian")


def test_the_core_never_imports_a_plugin():
    import ast

    core = Path(malaflow.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(core)}:{node.lineno}" for n in names if n.startswith("malaflow_plugins")]
    assert offenders == []
