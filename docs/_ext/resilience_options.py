"""``.. resilience-options:: resilience_mw.config.PoolConfig`` renders the options of a
config dataclass (name, default, rule, meaning) from the class itself, and
``.. resilience-options:: flask`` every RESILIENCE_* setting (name, default, meaning), so
the reference cannot drift from the code.

Each option is one entry of a definition list: ``name = default`` as the term, then its
meaning and its rule. Unlike a table of four columns, it wraps to any
width (the configuration page fits a 1280 px screen; tests/test_docs_browser.py checks
it). The text is put in nodes as it is, never parsed as reStructuredText, so a rule or a
meaning with ``*``, ``|`` or a trailing ``_`` shows as written. Each entry has an anchor:
``#<class>-<option>`` (``#poolconfig-failure-threshold``) or the setting's key
(``#resilience-state-url``).
"""

from __future__ import annotations

import enum
import importlib
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _literal(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, frozenset):
        value = sorted(value)
    return repr(value)


def _entry(anchor: str, name: str, meaning: str, default: Any, rule: str | None) -> nodes.definition_list_item:
    """``name = default`` as the term; the meaning, then the rule, as the definition."""
    shown = _literal(default)
    term = nodes.term("", "", nodes.literal(name, name), nodes.Text(" = "), nodes.literal(shown, shown))
    term["ids"].append(anchor)
    if rule and not meaning.endswith((".", ")")):
        meaning += "."
    text = nodes.paragraph("", "", nodes.Text(meaning))
    if rule:
        text += nodes.inline("", "", nodes.Text(" Rule: "), nodes.Text(rule), classes=["resilience-option-rule"])
    return nodes.definition_list_item("", term, nodes.definition("", text))


class OptionsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        target = self.arguments[0]
        items = []
        if target == "flask":
            from resilience_mw.settings import SETTINGS

            for s in SETTINGS:
                items.append(_entry(nodes.make_id(s.key), s.key, s.doc, s.default, None))
        else:
            from resilience_mw.config import options_of

            module, _, name = target.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            for opt, default, rule, doc in options_of(cls):
                items.append(_entry(nodes.make_id(f"{name}-{opt}"), opt, doc, default, rule))
        listing = nodes.definition_list("", *items)
        listing["classes"].append("resilience-options")
        return [listing]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("resilience-options", OptionsDirective)
    return {"parallel_read_safe": True}
