"""What users import keeps working: every path the README, docs and contrib named before
the tree was split into folders (moved ones warn and are the same object), the package's
exported names, errors that cross a process boundary, and the adapter over a NodePool."""

from __future__ import annotations

import ast
import concurrent.futures
import importlib
import multiprocessing
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests

import resilience_mw
from resilience_mw import _imports

#: every module path the README, docs and contrib named before the move (the demo too)
NAMED_MODULES = [
    "adapter", "admission", "alerts", "config", "decorators", "degradation", "exceptions", "failover",
    "features", "flask_ext", "graceful", "health", "logfilter", "metrics", "model", "pool", "readiness",
    "sampling", "sampling_otel", "settings", "signals", "store", "stores", "sync", "testing", "worker",
    "wsgi", "_http", "_node_state",
]
#: and the names they named inside those modules
NAMED_ATTRIBUTES = [
    ("adapter", "FailoverAdapter"), ("config", "AdapterConfig"), ("config", "AlertConfig"),
    ("config", "DegradationConfig"), ("config", "HealthCheckConfig"), ("config", "MiddlewareConfig"),
    ("config", "PoolConfig"), ("config", "StateConfig"), ("failover", "FailoverLoop"),
    ("metrics", "mark_process_dead"), ("sampling_otel", "LevelSampler"), ("settings", "ConfigWarning"),
    ("sync", "StateSync"), ("wsgi", "record_failure"),
]


@pytest.mark.parametrize("old", NAMED_MODULES)
def test_every_module_path_named_before_the_move_still_imports(old: str) -> None:
    name = f"resilience_mw.{old}"
    moved = _imports.MOVED.get(old)
    sys.modules.pop(name, None) if moved else None  # (so the warning shows again)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message)]
    if moved:
        new = importlib.import_module(f"resilience_mw.{moved}")
        assert module is new  # the same object: patching one patches the other
        assert [str(w.message).split(";")[0] for w in deprecations] == [f"{name} moved to resilience_mw.{moved}"]
        assert module.__spec__ is not None and module.__spec__.name == f"resilience_mw.{moved}"
    else:
        assert not deprecations


@pytest.mark.parametrize(("module", "attribute"), NAMED_ATTRIBUTES)
def test_every_name_named_in_those_modules_is_still_there(module: str, attribute: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert getattr(importlib.import_module(f"resilience_mw.{module}"), attribute) is not None


def test_python_dash_m_resilience_mw_still_runs() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "resilience_mw", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "force" in out.stdout


def _package_all_and_lazy(path: Path) -> tuple[set[str], set[str], set[str]]:
    """A package ``__init__``'s ``__all__``, its eagerly bound names, and its lazy ones."""
    tree = ast.parse(path.read_text())
    exported: set[str] = set()
    bound: set[str] = set()
    lazy: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = {e.value for e in node.value.elts}  # type: ignore[attr-defined]
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__getattr__" for t in node.targets):
            call = node.value
            assert isinstance(call, ast.Call) and isinstance(call.args[1], ast.Dict)
            lazy = {k.value for k in call.args[1].keys}  # type: ignore[union-attr]
    return exported, bound, lazy


@pytest.mark.parametrize("package", ["", "failover", "degradation", "admission", "fleet", "telemetry"])
def test_exported_members_agree(package: str) -> None:
    """``__all__`` lists exactly what the package binds or loads lazily, and each name
    resolves (httpx's test_exported_members)."""
    path = Path(resilience_mw.__file__).parent / package / "__init__.py"
    exported, bound, lazy = _package_all_and_lazy(path)
    assert not bound & lazy, bound & lazy
    public = {n for n in bound | lazy if not n.startswith("_") and n not in ("annotations", "TYPE_CHECKING", "lazy")}
    public |= {"__version__"} & exported
    assert exported == public - {"_imports"}, exported ^ public
    module = importlib.import_module("resilience_mw" + (f".{package}" if package else ""))
    for name in exported:
        assert getattr(module, name) is not None


# ---------------------------------------------------------------- errors


def _fail_over_dead_nodes(ports: list[int]) -> None:
    from resilience_mw import ServiceNode
    from resilience_mw.adapter import FailoverAdapter

    session = requests.Session()
    session.mount("http://up/", FailoverAdapter([ServiceNode(f"n{p}", f"http://127.0.0.1:{p}") for p in ports]))
    session.get("http://up/x", timeout=2)


def test_a_failed_adapter_call_crosses_a_process_boundary_as_itself() -> None:
    from tests.nodes import free_port

    ports = [free_port(), free_port()]  # nothing listens there: refused at once
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool, pytest.raises(requests.ConnectionError) as info:
        pool.submit(_fail_over_dead_nodes, ports).result(timeout=60)
    error = info.value
    assert isinstance(error, resilience_mw.FailoverError)  # still marked with its attempts
    assert sorted(a.node_id for a in error.attempts) == sorted(f"n{p}" for p in ports)  # (one tier: either first)
    assert "tried 2 nodes" in " ".join(getattr(error, "__notes__", []))


def _errors() -> list[BaseException]:
    from resilience_mw.adapter import (
        DeadlineExceeded,
        NoAvailableNodeConnectionError,
        ResponseTooLarge,
        UpstreamThrottled,
    )
    from resilience_mw.decorators import FeatureUnavailableHTTP
    from resilience_mw.exceptions import Attempt, with_attempts
    from resilience_mw.fleet import StoreError

    attempt = Attempt("a", requests.ConnectTimeout("slow"), 0.5)
    return [
        resilience_mw.ConfigError("failure_threshold", "3", "must be an integer", hint="write 3"),
        resilience_mw.UnknownNodeError("z", ("a", "b")),
        resilience_mw.AllNodesFailedError([attempt]),
        resilience_mw.NoAvailableNodeError("no healthy node"),
        NoAvailableNodeConnectionError("no healthy node"),
        resilience_mw.FeatureUnavailable(resilience_mw.Feature.Analytics, resilience_mw.DegradationLevel.Level1),
        FeatureUnavailableHTTP(resilience_mw.Feature.Analytics, resilience_mw.DegradationLevel.Level1, 30),
        DeadlineExceeded("deadline of 1s passed"),
        ResponseTooLarge("over 10 bytes"),
        UpstreamThrottled("throttled here, nothing sent", probability=0.5),
        StoreError("store down"),
        with_attempts(requests.ReadTimeout("read timed out"), [attempt, attempt]),
        with_attempts(ValueError("bad"), [attempt]),
    ]


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_as_itself(error: BaseException) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back).__name__ == type(error).__name__ and str(back) == str(error)
    assert isinstance(back, type(error).__mro__[1] if type(error) not in type(error).__mro__[1:] else type(error))
    assert isinstance(back, resilience_mw.FailoverError) == isinstance(error, resilience_mw.FailoverError)
    for attribute in ("field", "value", "reason", "hint", "node_id", "known", "feature", "level", "__notes__"):
        assert getattr(back, attribute, None) == getattr(error, attribute, None), attribute
    assert [a.node_id for a in getattr(back, "attempts", ())] == [a.node_id for a in getattr(error, "attempts", ())]


# ---------------------------------------------------------------- the adapter


def test_the_adapter_takes_a_node_pool_and_shares_its_health(node_factory: Any) -> None:
    from resilience_mw import NodePool, ServiceNode
    from resilience_mw.adapter import FailoverAdapter

    a, b = node_factory("a"), node_factory("b")
    pool = NodePool([ServiceNode("a", a.url, priority=10), ServiceNode("b", b.url, priority=5)], failure_threshold=3)
    session = requests.Session()
    session.mount("http://up/", FailoverAdapter(pool))
    assert session.get("http://up/x", timeout=5).json()["node"] == "a"
    for _ in range(3):  # what failed health checks or calls elsewhere on the same pool do
        pool.mark_failure("a")
    assert session.get("http://up/x", timeout=5).json()["node"] == "b"
    with pytest.raises(resilience_mw.ConfigError, match="NodePool"):
        FailoverAdapter(pool, failure_threshold=5)
