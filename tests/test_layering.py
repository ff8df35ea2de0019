"""Data flows one way: lower modules never import higher ones; only integrations import
flask, and requests is used by the health probe and the adapter alone."""

from __future__ import annotations

import ast
from pathlib import Path

import resilience_mw

PKG = Path(resilience_mw.__file__).parent

#: module -> layer; a module may import only modules of a lower or equal layer
LAYERS = {
    "_redact": 0,
    "exceptions": 0,
    "_validate": 0,
    "model": 0,
    "signals": 0,
    "_fork": 0,
    "config": 1,
    "strategies": 1,
    "store": 1,
    "_store_sqlite": 1,
    "_store_redis": 1,
    "stores": 1,
    "_node_state": 1,
    "pool": 2,
    "features": 2,
    "sampling": 2,
    "testing": 6,
    "worker": 2,
    "failover": 3,
    "degradation": 3,
    "_http": 3,
    "health": 4,
    "readiness": 4,
    "logfilter": 4,
    "graceful": 4,
    "_outcomes": 4,
    "_level_policy": 1,
    "_budget": 1,
    "_limit": 1,
    "admission": 1,
    "alerts": 4,
    "wsgi": 5,
    "sync": 5,
    "metrics": 5,
    "sampling_otel": 5,
    "adapter": 5,
    "settings": 4,
    "flask_ext": 5,
    "decorators": 6,
    "__init__": 7,
    "__main__": 7,
}
FLASK_ALLOWED = {"flask_ext", "decorators"}
REQUESTS_ALLOWED = {"_http", "health", "adapter"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                found.add((node.module or "").split(".")[0])
            elif node.module:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in PKG.glob("*.py")} == set(LAYERS)


def test_imports_follow_the_layers() -> None:
    for path in PKG.glob("*.py"):
        mod = path.stem
        for imp in imports(path):
            if imp in LAYERS and mod != "__init__":
                assert LAYERS[imp] <= LAYERS[mod], (
                    f"{mod} (layer {LAYERS[mod]}) imports {imp} (layer {LAYERS[imp]})"
                )
            top = imp.split(".")[0]
            if top in ("flask", "werkzeug"):
                assert mod in FLASK_ALLOWED, f"{mod} imports {imp}"
            if top in ("requests", "urllib3"):
                assert mod in REQUESTS_ALLOWED, f"{mod} imports {imp}"


def test_public_names_resolve() -> None:
    for name in resilience_mw.__all__:
        assert getattr(resilience_mw, name) is not None
