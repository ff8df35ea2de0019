"""No secret (a node password with /?#@:, the admin token, an Authorization header, a
query-string key) appears in any exception message, repr, log record or
readiness/admin document the library produces."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
import requests
from flask import Flask

from resilience_mw import ConfigError, FailoverManager, ServiceNode
from resilience_mw.flask_ext import Resilience
from tests.nodes import free_port

RAW_PASSWORD = "p/?#@:w0rd-SECRET"
ENCODED_PASSWORD = "p%2F%3F%23%40%3Aw0rd-SECRET"
TOKEN = "tok-SECRET-4711"
CALLER_BEARER = "caller-SECRET-bearer"
QUERY_KEY = "query-SECRET-key"
BASIC = base64.b64encode(f"user:{RAW_PASSWORD}".encode()).decode()
SECRETS = (RAW_PASSWORD, ENCODED_PASSWORD, "w0rd-SECRET", TOKEN, CALLER_BEARER, QUERY_KEY, BASIC)


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def error_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), repr(getattr(exc, "value", None))]
    for attempt in getattr(exc, "attempts", ()):
        parts.append(str(attempt.error))
    return "\n".join(parts)


def all_log_text(records: list[logging.LogRecord]) -> str:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    return "\n".join(handler.format(r) for r in records if r.name.startswith("resilience_mw"))


@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://user:{RAW_PASSWORD}@127.0.0.1:8080",
        f"ftp://user:{RAW_PASSWORD}@127.0.0.1",
        f"http://user:{RAW_PASSWORD}@",
        f"http://user:{ENCODED_PASSWORD}@h/base?x=1",
    ],
)
def test_config_errors_about_endpoints_hide_passwords(endpoint: str) -> None:
    for build in (
        lambda: ServiceNode("a", endpoint),
        lambda: FailoverManager([endpoint]),  # type: ignore[list-item]
        lambda: FailoverManager([{"id": "a", "endpoint": endpoint}]),  # type: ignore[list-item]
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert leaks(error_text(info.value)) == []
    app = Flask("leaky")
    app.config["RESILIENCE_NODES"] = [{"id": "a", "endpoint": endpoint}]
    with pytest.raises(ConfigError) as info:
        Resilience(app)
    assert info.value.field.startswith("RESILIENCE_NODES[0]") and leaks(error_text(info.value)) == []
    app.config["RESILIENCE_NODES"] = endpoint  # a string where a list goes
    with pytest.raises(ConfigError) as info:
        Resilience(app)
    assert leaks(error_text(info.value)) == []


def test_bad_admin_token_is_not_shown() -> None:
    app = Flask("token")
    app.config["RESILIENCE_ADMIN_TOKEN"] = f" {TOKEN} "
    with pytest.raises(ConfigError) as info:
        Resilience(app)
    assert leaks(error_text(info.value)) == [] and "***" in str(info.value)


def test_running_service_shows_no_secret(node_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="resilience_mw")
    up = node_factory("up")
    flaky = node_factory("flaky", mode="unavailable")
    dead = f"http://user:{ENCODED_PASSWORD}@127.0.0.1:{free_port()}"
    app = Flask("secrets")
    app.config.update(
        RESILIENCE_START="off",
        RESILIENCE_ADMIN_TOKEN=TOKEN,
        RESILIENCE_NODES=[
            {"id": "dead", "endpoint": dead, "priority": 30},
            {"id": "flaky", "endpoint": flaky.url.replace("http://", f"http://user:{ENCODED_PASSWORD}@"), "priority": 20},
            ServiceNode("up", up.url.replace("http://", f"http://user:{ENCODED_PASSWORD}@"), priority=10),
        ],
        RESILIENCE_FAILOVER_OPTIONS={"failure_threshold": 1},
        RESILIENCE_HEALTH_CHECK_TIMEOUT=0.5,
        RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD=1,
    )
    state = Resilience(app).state(app)
    texts = [repr(state), repr(state.settings), repr(state.failover), repr(state.adapter), repr(state.health_checker)]
    texts += [repr(n) for n in state.failover.nodes] if state.failover else []

    session = requests.Session()
    assert state.adapter is not None
    session.mount("http://upstream/", state.adapter)
    headers = {"Authorization": f"Bearer {CALLER_BEARER}"}
    r = session.get(f"http://upstream/api?api_key={QUERY_KEY}", headers=headers, timeout=2)
    assert r.status_code == 200 and r.resilience_node == "up"  # type: ignore[attr-defined]
    assert leaks(repr(r)) == []

    # every node fails: the error and its attempts, and what they point at
    up.mode = "error"
    flaky.mode = "reset"
    with pytest.raises(requests.RequestException) as info:
        session.post(f"http://upstream/api?api_key={QUERY_KEY}", headers=headers, data=b"x", timeout=2)
    texts.append(error_text(info.value))
    for exc in (info.value, *(a.error for a in getattr(info.value, "attempts", ()))):
        req = getattr(exc, "request", None)
        if req is not None:
            assert BASIC not in str(req.headers.get("Authorization", "")), "node credentials on .request"
            assert ENCODED_PASSWORD not in (req.url or "")

    assert state.health_checker is not None and state.failover is not None
    state.health_checker.run_once(state.failover)

    client = app.test_client()
    texts.append(client.get("/readyz").get_data(as_text=True))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for resp in (
        client.get("/resilience/level", headers=auth),
        client.put("/resilience/level", json={"level": "Level9"}, headers=auth),
        client.put("/resilience/level", json={"level": "Level2"}, headers=auth),
        client.delete("/resilience/level", headers=auth),
        client.get("/resilience/level", headers={"Authorization": "Bearer wrong"}),
    ):
        texts.append(resp.get_data(as_text=True) + str(resp.headers))

    logged = all_log_text(caplog.records)
    assert "marked unhealthy" in logged  # the run did log: the check below is not vacuous
    assert leaks(logged) == [], logged
    for text in texts:
        assert leaks(text) == [], text
