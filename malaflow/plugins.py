"""The plugin registry: one pluggy PluginManager fed by the ``malaflow`` entry points.

Built-in plugins (package ``malaflow_plugins``) are registered through the very same
entry-point group as a third-party package's, so there is no second path to test.
Every hook is called through pluggy (``pm.subset_hook_caller``, one plugin at a time, so
each class is attributed to the package that provided it). What the registry checks:

* a plugin whose import fails, or whose hook raises, is skipped with a warning naming it;
* every class a hook returns must subclass its kind's base class (:class:`Descriptor`,
  :class:`Target`, :class:`Model`, :class:`Reader`), have a non-empty string ``name``
  and implement what the core calls (see :data:`REQUIRED`); a class that does not is
  skipped with a warning saying what is missing, and the others load;
* two classes of one kind with the same name: a warning names both packages, and the
  winner follows one rule — a plugin registered in-process (:func:`register`) beats an
  installed third-party package, which beats malaflow's built-ins (so a package can
  replace ``ldos``); between two third-party packages the distribution whose name
  sorts first wins.

Environment: ``MALAFLOW_DISABLE_PLUGINS=a,b`` switches plugins off, by entry-point name
(a whole module, as ``malaflow plugins`` lists in its "entry point" column) or by class
name; ``MALAFLOW_TRACE_PLUGINS=1`` prints every hook call (plugin, hook, result, time)
to standard error, through pluggy's hook-call monitoring.
"""

from __future__ import annotations

import dataclasses
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
BUILTIN_PACKAGE = "malaflow"
IN_PROCESS = "(in-process)"

#: methods a class of each kind must override (``name`` always; descriptors see :func:`required`)
REQUIRED = {
    "targets": ("dos",),
    "models": ("build",),
    "readers": ("can_read", "read"),
}


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class, as `malaflow plugins` lists it."""

    name: str
    kind: str
    version: str
    package: str
    entry_point: str
    cls: type


def base_classes() -> dict[str, type]:
    """The base class of each kind (imported here: those modules import this one)."""
    from .descriptors import Descriptor
    from .models import Model
    from .readers import Reader
    from .targets import Target

    return {"descriptors": Descriptor, "targets": Target, "models": Model, "readers": Reader}


def disabled_names() -> set[str]:
    """Names listed in $MALAFLOW_DISABLE_PLUGINS."""
    return {n.strip() for n in os.environ.get("MALAFLOW_DISABLE_PLUGINS", "").split(",") if n.strip()}


def required(kind: str, cls: type) -> tuple[str, ...]:
    """The methods the core calls that ``cls``, a plugin of ``kind``, must override."""
    if kind == "descriptors":
        return ("n_features", "halo", "compute") if getattr(cls, "blockwise", True) else ("n_features", "compute_grid")
    return REQUIRED[kind]


def problems(cls: Any, kind: str, base: type) -> list[str]:
    """What keeps ``cls`` from being a plugin of ``kind`` (empty if nothing)."""
    if not isinstance(cls, type):
        return [f"is not a class but {type(cls).__name__}"]
    found = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        found.append("has no string attribute 'name'")
    if not issubclass(cls, base):
        found.append(f"does not subclass malaflow.{base.__name__}")
        return found
    stubs = [m for m in required(kind, cls) if getattr(cls, m) is getattr(base, m)]
    if stubs:
        found.append(f"does not implement {', '.join(stubs)}")
    if kind in ("descriptors", "models") and not dataclasses.is_dataclass(getattr(cls, "Params", None)):
        found.append("has no Params dataclass")
    return found


def _priority(package: str) -> tuple[int, str]:
    """Lower wins a name clash: in-process, then third-party (by name), then built-in."""
    if package == IN_PROCESS:
        return (0, "")
    return (2, package) if package == BUILTIN_PACKAGE else (1, package)


class _Registry:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = disabled_names()
        # plugin name (entry-point name) -> (distribution name, version)
        self.sources: dict[str, tuple[str, str]] = {}
        self._classes: dict[str, dict[str, PluginInfo]] | None = None
        if os.environ.get("MALAFLOW_TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)
        self._load_entry_points()

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue  # the same distribution seen twice on sys.path
            if ep.name in self.disabled:
                self.pm.set_blocked(ep.name)
                continue
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

    def register(self, plugin: Any, name: str) -> None:
        """Register an in-process plugin object (for notebooks and tests)."""
        if name in self.disabled:
            return
        self.pm.register(plugin, name=name)
        self.sources[name] = (IN_PROCESS, "")
        self._classes = None

    # ------------------------------------------------------------------ tracing

    def _trace_before(self, hook_name: str, hook_impls: list, kwargs: dict) -> None:
        self._t0 = time.perf_counter()

    def _trace_after(self, outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
        ms = (time.perf_counter() - self._t0) * 1e3
        who = ",".join(i.plugin_name for i in hook_impls)
        if outcome.exception is not None:
            shown = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
        else:
            shown = repr([getattr(c, "name", repr(c)) for r in outcome.get_result() for c in (r or [])])
        print(f"[malaflow trace] {who}.{hook_name}() -> {shown} ({ms:.2f} ms)", file=sys.stderr)

    # ------------------------------------------------------------------ classes

    def classes(self) -> dict[str, dict[str, PluginInfo]]:
        if self._classes is None:
            bases = base_classes()
            self._classes = {kind: self._collect(kind, bases[kind]) for kind in KINDS}
        return self._classes

    def _provided(self, kind: str) -> list[tuple[str, list]]:
        """(plugin name, classes) of every plugin implementing the hook of ``kind``."""
        hook_name = f"malaflow_{kind}"
        plugins = [impl.plugin for impl in getattr(self.pm.hook, hook_name).get_hookimpls()]
        out = []
        for plugin in plugins:
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not plugin])
            plugin_name = self.pm.get_name(plugin)
            try:
                (result,) = caller() or [[]]
            except Exception as exc:
                warnings.warn(
                    f"malaflow plugin {plugin_name!r}: hook {hook_name}() raised "
                    f"{type(exc).__name__}: {exc}; its {kind} are skipped",
                    RuntimeWarning,
                    stacklevel=4,
                )
                continue
            out.append((plugin_name, list(result or [])))
        return out

    def _collect(self, kind: str, base: type) -> dict[str, PluginInfo]:
        found: dict[str, PluginInfo] = {}
        for plugin_name, result in self._provided(kind):
            package, version = self.sources.get(plugin_name, ("?", "?"))
            for cls in result:
                wrong = problems(cls, kind, base)
                if wrong:
                    warnings.warn(
                        f"malaflow plugin {plugin_name!r} (package {package}): {getattr(cls, '__name__', cls)!r} "
                        f"in malaflow_{kind}() {' and '.join(wrong)}; it is skipped",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    continue
                if cls.name in self.disabled:
                    continue
                info = PluginInfo(cls.name, kind, version, package, plugin_name, cls)
                other = found.get(cls.name)
                if other is not None:
                    keep, drop = sorted((other, info), key=lambda p: _priority(p.package))
                    warnings.warn(
                        f"two {kind} named {cls.name!r}: from package {keep.package} (entry point "
                        f"{keep.entry_point!r}) and from package {drop.package} (entry point "
                        f"{drop.entry_point!r}); {keep.package}'s is used (rule: in-process, then "
                        "third-party packages by name, then malaflow's built-ins)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    info = keep
                found[cls.name] = info
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
