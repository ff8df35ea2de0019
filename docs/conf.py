"""Sphinx configuration for the resilience_mw documentation: the guide and the reference
(built in CI with -W)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import resilience_mw

project = "resilience_mw"
author = "the resilience_mw developers"
copyright = f"2026, {author}"  # shown in the footer
release = resilience_mw.__version__
extensions = ["sphinx.ext.autodoc", "resilience_options", "resilience_refs"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# a longer signature lists one parameter per line, so it never runs past the page
python_maximum_signature_line_length = 80
add_module_names = False  # each module has its heading: Metrics, not resilience_mw.telemetry.metrics.Metrics
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
# 1200 px: the guide's examples fit without scrolling on a 1280 px screen; below it the
# theme's narrow layout takes over (the sidebar moves under the text)
html_theme_options = {"page_width": "1200px"}
html_static_path = ["_static"]  # custom.css: the option lists, the size of code
suppress_warnings = ["ref.python"]  # names re-exported at the top level resolve more than once
