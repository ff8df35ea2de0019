"""Suites we did not write, through the adapter: requests' own tests (one node whose
endpoint is the test server, and a refused node before it) and the OTLP/HTTP exporter's
own tests. No test may fail that passes with requests' plain HTTPAdapter, except the
differences listed here, each with its reason (the README lists them too)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.compat.harness import OTLP_HTTP, REQUESTS, Result, run

pytestmark = [pytest.mark.compat, pytest.mark.slow]

#: failing only through a two-node adapter, and why
KNOWN_TWO_NODE = {
    # each counts the connection pools after its requests and finds one more: the
    # refused node's (a real second node has a pool of its own)
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_True",
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_bundle_expired_cert",
    "tests.test_requests.TestPreparingURLs::test_different_connection_pool_for_tls_settings_verify_bundle_unexpired_cert",
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
