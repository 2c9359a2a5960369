"""The plugin registry: one pluggy PluginManager fed by the ``malaflow`` entry points.

Built-in plugins (package ``malaflow_plugins``) are registered through the very same
entry-point group as a third-party package's, so there is no second path to test.
A plugin whose import fails is reported with a warning naming it; the others load.

Set ``MALAFLOW_TRACE_PLUGINS=1`` to print every hook call (plugin, hook, result,
time) to standard error while writing a plugin.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "malaflow"
KINDS = ("descriptors", "targets", "models", "readers")


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class, as `malaflow plugins` lists it."""

    name: str
    kind: str
    version: str
    package: str
    entry_point: str
    cls: type


class _Registry:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        # plugin name (entry-point name) -> (distribution name, version)
        self.sources: dict[str, tuple[str, str]] = {}
        self._classes: dict[str, dict[str, PluginInfo]] | None = None
        self._load_entry_points()

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            dist = ep.dist
            package = dist.name if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the others
                warnings.warn(
                    f"malaflow plugin {ep.name!r} ({ep.value}, package {package} {version}) "
                    f"failed to load and is skipped: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.sources[ep.name] = (package, version)

    def register(self, plugin: Any, name: str, package: str = "?", version: str = "?") -> None:
        """Register an in-process plugin object (for notebooks and tests)."""
        self.pm.register(plugin, name=name)
        self.sources[name] = (package, version)
        self._classes = None

    def classes(self) -> dict[str, dict[str, PluginInfo]]:
        if self._classes is None:
            self._classes = {kind: self._collect(kind) for kind in KINDS}
        return self._classes

    def _collect(self, kind: str) -> dict[str, PluginInfo]:
        hook = getattr(self.pm.hook, f"malaflow_{kind}")
        found: dict[str, PluginInfo] = {}
        trace = bool(os.environ.get("MALAFLOW_TRACE_PLUGINS"))
        # Hook implementations are called one by one so every class can be
        # attributed to the plugin (and package) that provided it.
        for impl in reversed(hook.get_hookimpls()):
            t0 = time.perf_counter()
            try:
                result = impl.function()
            except Exception as exc:
                warnings.warn(
                    f"malaflow plugin {impl.plugin_name!r}: hook malaflow_{kind}() raised "
                    f"{type(exc).__name__}: {exc}; its {kind} are skipped",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if trace:
                names = [getattr(c, "name", repr(c)) for c in (result or [])]
                print(
                    f"[malaflow trace] {impl.plugin_name}.malaflow_{kind}() -> {names} "
                    f"({(time.perf_counter() - t0) * 1e3:.2f} ms)",
                    file=sys.stderr,
                )
            package, version = self.sources.get(impl.plugin_name, ("?", "?"))
            for cls in result or []:
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    warnings.warn(
                        f"malaflow plugin {impl.plugin_name!r}: {cls!r} in malaflow_{kind}() "
                        "has no string attribute 'name' and is skipped",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    continue
                if name in found:
                    first = found[name]
                    warnings.warn(
                        f"{kind[:-1]} {name!r} from package {package} is ignored: "
                        f"package {first.package} registered that name first",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    continue
                found[name] = PluginInfo(name, kind, version, package, impl.plugin_name, cls)
        return found


_registry: _Registry | None = None


def registry(reload: bool = False) -> _Registry:
    """The process-wide registry; ``reload=True`` re-reads the entry points."""
    global _registry
    if _registry is None or reload:
        _registry = _Registry()
    return _registry


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Every registered plugin class (optionally of one kind), sorted by kind and name."""
    if kind is not None and kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; the kinds are {', '.join(KINDS)}")
    classes = registry().classes()
    kinds = [kind] if kind else list(KINDS)
    return [classes[k][n] for k in kinds for n in sorted(classes[k])]


def get_plugin(kind: str, name: str) -> type:
    """The class registered as ``name`` among the ``kind`` plugins."""
    available = {p.name: p for p in list_plugins(kind)}
    if name not in available:
        listed = ", ".join(sorted(available)) or "none"
        raise PluginError(
            f"no {kind[:-1]} plugin named {name!r} is installed (installed: {listed}). "
            "A third-party plugin appears here once its package, which declares an entry "
            f"point in the group {ENTRY_POINT_GROUP!r}, is installed."
        )
    return available[name].cls


def register(plugin: Any, name: str) -> None:
    """Register a plugin object in this process only (no entry point needed)."""
    registry().register(plugin, name=name)
