"""Import plumbing: names a package loads only when first used, and the old module
paths that moved into the subsystem folders.

* :func:`lazy` gives a package a module ``__getattr__`` that imports a name's module on
  first use (PEP 562), so that importing the package does not load what a user may never
  need (Flask, requests, Redis, Prometheus, OpenTelemetry).
* :data:`MOVED` and :func:`install`: importing an old path (``resilience_mw.pool``) gives
  the same module object as its new path (``resilience_mw.failover.pool``), with a
  :class:`DeprecationWarning` naming that path. Remove at 1.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["MOVED", "install", "lazy"]

#: old path -> new path (both under ``resilience_mw.``)
MOVED: dict[str, str] = {
    "worker": "_worker",
    "_node_state": "failover.node_state",
    "strategies": "failover._strategies",
    "_budget": "failover.budget",
    "pool": "failover.pool",
    "health": "failover.health",
    "_http": "failover._transport",
    "_level_policy": "degradation.hysteresis",
    "sampling": "degradation.load",
    "features": "degradation.features",
    "graceful": "degradation.fallback",
    "_outcomes": "degradation.counting",
    "_limit": "admission.limit",
    "store": "fleet.store",
    "_store_sqlite": "fleet._sqlite",
    "_store_redis": "fleet._redis",
    "stores": "fleet.stores",
    "sync": "fleet.sync",
    "metrics": "telemetry.metrics",
    "sampling_otel": "telemetry.otel",
    "logfilter": "telemetry.logs",
    "alerts": "telemetry.alerts",
    "readiness": "telemetry.readiness",
}

_PACKAGE = __name__.rpartition(".")[0]


def lazy(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``names[name]`` (a module
    path relative to the package) on first access of ``name`` and keeps the value."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``resilience_mw.<old>`` and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{_PACKAGE}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes at 1.0)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has just given the module the alias's spec: give it back its own.
        alias = module.__spec__.name if module.__spec__ is not None else ""
        if alias in self._specs:
            module.__spec__ = self._specs.pop(alias)


_installed = _Alias()


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if _installed not in sys.meta_path:
        sys.meta_path.append(_installed)
