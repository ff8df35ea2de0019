"""Sphinx configuration for the resilience_mw reference (built in CI with -W)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import resilience_mw

project = "resilience_mw"
author = "the resilience_mw developers"
release = resilience_mw.__version__
extensions = ["sphinx.ext.autodoc", "resilience_options"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
suppress_warnings = ["ref.python"]  # names re-exported at the top level resolve more than once
