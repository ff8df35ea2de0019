"""resilience_mw.testing as a user meets it: the pytest plugin in another project's run,
the helpers on a real app."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resilience_mw.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]


def test_the_pytest_plugin_builds_apps_without_threads(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["resilience_mw.testing"]\n')
    (tmp_path / "test_app.py").write_text(
        textwrap.dedent(
            """
            import threading

            from flask import Flask
            from resilience_mw.flask_ext import Resilience
            from resilience_mw.testing import force_level

            def library_threads():
                return [t.name for t in threading.enumerate() if t.name.startswith("resilience_mw")]

            def create_app():
                app = Flask("user_app")
                app.config.update(RESILIENCE_START="eager",
                                  RESILIENCE_NODES=[{"id": "a", "endpoint": "http://127.0.0.1:9"}])
                Resilience(app)
                app.add_url_rule("/", "index", lambda: "ok")
                return app

            def test_built_app_has_no_threads(build_app):
                app = build_app(create_app)
                assert app.test_client().get("/").status_code == 200  # a lazy start would start here
                assert library_threads() == []
                force_level(app, "Emergency")
                assert app.test_client().get("/readyz").status_code == 503

            def test_whole_test_off(resilience_workers_off):
                create_app().test_client().get("/")
                assert library_threads() == []

            def test_without_the_fixture_threads_run():
                app = create_app()
                assert "resilience_mw-health" in library_threads()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "3 passed" in done.stdout, done.stdout + done.stderr


def test_the_fake_clock_only_moves_forward() -> None:
    clock = FakeClock(5)
    assert clock() == 5 and clock.advance(2.5) == 7.5
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
