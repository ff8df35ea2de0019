"""Suites we did not write: requests' own tests through the adapter (one node whose
endpoint is the test server, and a refused node before it), the OTLP/HTTP exporter's
own tests with the adapter in its session, and Flask's own tests with the extension on
every app. No test may fail that passes without resilience_mw in the path, except the
differences listed here, each with its reason (docs/guide/adapter.rst lists them too)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.system.compat.harness import FLASK, OTLP_HTTP, REQUESTS, Result, run

pytestmark = [pytest.mark.compat, pytest.mark.slow]

#: failing only through a two-node adapter, and why
KNOWN_TWO_NODE = {
    # each counts the connection pools after its requests and finds one more: the
    # refused node's (a real second node has a pool of its own)
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_True",
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_bundle_expired_cert",
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_bundle_unexpired_cert",
}


#: failing only with the extension on every app, and why
KNOWN_FLASK_EXTENSION = {
    # `flask routes` lists every rule; the expected output has no /livez and /readyz
    "tests.test_cli.TestRoutes::test_no_routes",
    "tests.test_cli.TestRoutes::test_simple",
    "tests.test_cli.TestRoutes::test_sort",
}


def _runs(suite: object, modes: tuple[str, ...]) -> dict[str, Result]:
    with ThreadPoolExecutor(len(modes)) as pool:
        futures = {mode: pool.submit(run, suite, mode) for mode in modes}  # type: ignore[arg-type]
        return {mode: f.result() for mode, f in futures.items()}


def test_requests_own_suite_through_one_and_two_node_adapters() -> None:
    results = _runs(REQUESTS, ("plain", "one", "two"))
    plain, one, two = results["plain"], results["one"], results["two"]
    assert len(plain.passed) > 500, "the baseline did not run"
    assert one.sent > 200 and two.sent > 200, "the adapter was not in the path"
    assert sorted(one.failed - plain.failed) == []
    assert sorted(two.failed - plain.failed - KNOWN_TWO_NODE) == []
    assert len(one.passed) >= len(plain.passed) - 1 and len(two.passed) >= len(plain.passed) - len(KNOWN_TWO_NODE)


def test_otlp_http_exporters_own_suite_with_the_adapter_in_its_session() -> None:
    # (one node only: the suite fakes sockets with mocket, under which no node is ever refused)
    results = _runs(OTLP_HTTP, ("plain", "one"))
    plain, one = results["plain"], results["one"]
    assert len(plain.passed) > 100 and plain.failed == frozenset()
    assert one.sent > 10, "the adapter was not in the path"
    assert one.failed == frozenset() and one.passed == plain.passed


def test_flasks_own_suite_with_the_extension_on_every_app() -> None:
    results = _runs(FLASK, ("plain", "extension"))
    plain, ext = results["plain"], results["extension"]
    assert len(plain.passed) > 400, "the baseline did not run"
    assert ext.apps > 400, "the extension was not on the suite's apps"
    assert sorted(ext.failed - plain.failed - KNOWN_FLASK_EXTENSION) == []
    assert "tests.test_basic::test_app_freed_on_zero_refcount" in ext.passed
    # threads of dropped apps ended: what is left belongs to apps still referenced (a
    # sampler and a health checker each) and the deadline watchdog
    assert 0 <= ext.threads_after_collection <= 2 * ext.apps_alive + 1, ext
