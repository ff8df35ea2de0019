"""Every signal is sent with exactly the keyword arguments its documentation lists: the
contract (``signals.ARGUMENTS``) against each documented comment and against every
place in the package that sends it."""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path

import resilience_mw
from resilience_mw import signals

PKG = Path(resilience_mw.__file__).parent
SOURCE = (PKG / "signals.py").read_text()


def documented(name: str) -> set[str]:
    """The bare identifiers in double backticks of the ``#:`` comment above the signal."""
    var = name.replace("-", "_")
    lines = SOURCE.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{var}: Signal"))
    comment = []
    for line in reversed(lines[:at]):
        if not line.startswith("#:"):
            break
        comment.append(line[2:])
    words = set(re.findall(r"``([a-z_][a-z0-9_]*)``", " ".join(comment)))  # (arguments are lowercase)
    return {w for w in words if not keyword.iskeyword(w)}


def sent() -> dict[str, list[tuple[str, set[str]]]]:
    """Each signal -> (where, keyword names) of every ``signals.send(signals.X, ...)``."""
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "send"
                and node.args
                and isinstance(node.args[0], ast.Attribute)
                and isinstance(node.args[0].value, ast.Name)
                and node.args[0].value.id == "signals"
            ):
                var = node.args[0].attr
                where = f"{path.relative_to(PKG)}:{node.lineno}"
                found.setdefault(var, []).append((where, {k.arg for k in node.keywords if k.arg}))
    return found


def test_every_signal_has_a_contract_and_its_comment_lists_it() -> None:
    names = {s.name for s in vars(signals).values() if isinstance(s, signals.Signal)}
    assert names == set(signals.ARGUMENTS)
    for name, arguments in signals.ARGUMENTS.items():
        assert documented(name) == arguments, name


def test_every_send_passes_exactly_the_documented_arguments() -> None:
    calls = sent()
    assert set(calls) == {n.replace("-", "_") for n in signals.ARGUMENTS}  # each is sent somewhere
    wrong = [
        f"{where}: {sorted(kwargs)} != {sorted(signals.ARGUMENTS[var.replace('_', '-')])}"
        for var, sites in calls.items()
        for where, kwargs in sites
        if kwargs != signals.ARGUMENTS[var.replace("_", "-")]
    ]
    assert not wrong, "\n".join(wrong)
