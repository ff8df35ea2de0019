"""``.. resilience-options:: resilience_mw.config.PoolConfig`` renders the option table of
a config dataclass (name, default, rule, meaning) from the class itself, and
``.. resilience-options:: flask`` the table of every RESILIENCE_* key, so the reference
cannot drift from the code."""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or " "


def _literal(value: Any) -> str:
    if isinstance(value, frozenset):
        value = sorted(value)
    return f"``{value!r}``"


class OptionsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        target = self.arguments[0]
        if target == "flask":
            from resilience_mw.settings import SETTINGS

            header = ["key", "default", "meaning"]
            rows = [[f"``{s.key}``", _literal(s.default), _cell(s.doc)] for s in SETTINGS]
        else:
            from resilience_mw.config import options_of

            module, _, name = target.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            header = ["option", "default", "rule", "meaning"]
            rows = [
                [f"``{opt}``", _literal(default), _cell(rule), _cell(doc)]
                for opt, default, rule, doc in options_of(cls)
            ]
        lines = [".. list-table::", "   :header-rows: 1", ""]
        for row in [header, *rows]:
            lines.append(f"   * - {row[0]}")
            lines.extend(f"     - {cell}" for cell in row[1:])
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=target), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("resilience-options", OptionsDirective)
    return {"parallel_read_safe": True}
