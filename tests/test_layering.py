"""Data flows one way: each package or top-level module imports only from its own layer or
below; only the integrations import Flask; requests is loaded by the adapter and the
health probe alone. One row per package: the table is the folder listing."""

from __future__ import annotations

import ast
from pathlib import Path

import resilience_mw

PKG = Path(resilience_mw.__file__).parent

#: a package (folder) or top-level module -> its layer; it may import only units of a
#: lower layer, and (within a layer) only itself
LAYERS = {
    # values, errors, events, options, plumbing: no state, no threads
    "_redact": 0,
    "_validate": 0,
    "_fork": 0,
    "_imports": 0,
    "_worker": 0,
    "_sqlite_file": 0,
    "exceptions": 0,
    "model": 0,
    "signals": 0,
    "config": 0,
    "settings": 0,
    # the subsystems
    "failover": 1,
    "degradation": 1,
    "admission": 2,
    "fleet": 2,
    "telemetry": 2,
    # where users plug it in
    "wsgi": 3,
    "adapter": 3,
    "flask_ext": 5,
    "decorators": 5,
    "testing": 5,
    "runtime": 4,
    "__init__": 6,
    "__main__": 6,
}
#: the import order inside layer 0 (a unit may import those before it)
LAYER_ZERO = ["_redact", "exceptions", "_validate", "_fork", "_imports", "_worker", "_sqlite_file", "model", "signals",
              "config", "settings"]
FLASK_ALLOWED = {"flask_ext", "decorators"}
REQUESTS_ALLOWED = {"failover", "adapter"}


def unit_of(path: Path) -> str:
    """The package folder or top-level module a file belongs to."""
    parts = path.relative_to(PKG).with_suffix("").parts
    return parts[0]


def imports(path: Path) -> set[str]:
    """The units of resilience_mw a file imports (relative imports resolved), and the
    top-level names of the other packages it imports at module level or in functions."""
    unit = unit_of(path)
    depth = len(path.relative_to(PKG).parts) - 1  # 0 at the top, 1 inside a folder
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > depth:  # to the top of the package
                    names = [node.module] if node.module else [a.name for a in node.names]
                    found.update(n.split(".")[0] for n in names)
                else:
                    found.add(unit)
            elif node.module:
                found.add("ext:" + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update("ext:" + a.name.split(".")[0] for a in node.names)
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(p) for p in PKG.rglob("*.py")}
    assert units == set(LAYERS)


def test_imports_follow_the_layers() -> None:
    broken = []
    for path in PKG.rglob("*.py"):
        unit = unit_of(path)
        for imp in imports(path):
            if imp.startswith("ext:"):
                top = imp[4:]
                if top in ("flask", "werkzeug") and unit not in FLASK_ALLOWED:
                    broken.append(f"{path.relative_to(PKG)} imports {top}")
                if top in ("requests", "urllib3") and unit not in REQUESTS_ALLOWED:
                    broken.append(f"{path.relative_to(PKG)} imports {top}")
                continue
            if unit in (imp, "__init__"):
                continue
            mine, theirs = LAYERS[unit], LAYERS[imp]
            ok = theirs < mine or (mine == theirs == 0 and LAYER_ZERO.index(imp) < LAYER_ZERO.index(unit))
            if not ok:
                broken.append(f"{path.relative_to(PKG)} ({unit}, layer {mine}) imports {imp} (layer {theirs})")
    assert not broken, "\n".join(broken)


def test_the_tree_stays_small() -> None:
    top = [p for p in PKG.iterdir() if p.is_file()]
    assert len(top) <= 20, sorted(p.name for p in top)
    for folder in (p for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"):
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, (folder.name, len(modules))


def test_public_names_resolve() -> None:
    for name in resilience_mw.__all__:
        assert getattr(resilience_mw, name) is not None
