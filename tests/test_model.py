"""ServiceNode validation, redaction and the exception tree."""

from __future__ import annotations

import pytest

from resilience_mw import (
    AllNodesFailedError,
    Attempt,
    ConfigError,
    DegradationLevel,
    FailoverManager,
    ResilienceError,
    ServiceNode,
    UnknownNodeError,
)


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"id": "", "endpoint": "http://a"}, "id", "''"),
        ({"id": "a", "endpoint": "ftp://a"}, "endpoint", "ftp://a"),
        ({"id": "a", "endpoint": "http://"}, "endpoint", "http://"),
        ({"id": "a", "endpoint": "localhost:80"}, "endpoint", "localhost:80"),
        ({"id": "a", "endpoint": "http://a", "priority": -1}, "priority", "-1"),
        ({"id": "a", "endpoint": "http://a", "weight": 0}, "weight", "0"),
        ({"id": "a", "endpoint": "http://a:99999"}, "endpoint", "http://a:99999"),
    ],
)
def test_bad_node_names_field_and_value(kwargs: dict[str, object], field: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceNode(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value) and shown in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ResilienceError)


def test_endpoint_trailing_slash_dropped_and_credentials_redacted() -> None:
    node = ServiceNode("a", "https://user:s3cret@example.com:8443/base/")
    assert node.endpoint == "https://user:s3cret@example.com:8443/base"
    assert "s3cret" not in repr(node) and "s3cret" not in node.safe_endpoint
    assert node.safe_endpoint == "https://***@example.com:8443/base"


def test_bad_endpoint_error_does_not_leak_credentials() -> None:
    with pytest.raises(ConfigError) as info:
        ServiceNode("a", "ftp://user:s3cret@host")
    assert "s3cret" not in str(info.value)


def test_duplicate_ids_and_empty_list_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        FailoverManager([ServiceNode("a", "http://x"), ServiceNode("a", "http://y")])
    with pytest.raises(ConfigError, match="nodes"):
        FailoverManager([])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"strategy": "Fastest"}, "strategy"),
        ({"base_ejection_time": 0}, "base_ejection_time"),
        ({"base_ejection_time": 10, "max_ejection_time": 5}, "max_ejection_time"),
        ({"max_ejection_percent": 0}, "max_ejection_percent"),
        ({"latency_alpha": 1.5}, "latency_alpha"),
    ],
)
def test_manager_config_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailoverManager([ServiceNode("a", "http://x")], **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_strategy_accepted_by_name() -> None:
    m = FailoverManager([ServiceNode("a", "http://x")], "RoundRobin")
    assert m.strategy.name == "RoundRobin"


def test_unknown_node_is_clear_error() -> None:
    m = FailoverManager([ServiceNode("a", "http://x")])
    with pytest.raises(UnknownNodeError) as info:
        m.mark_failure("zzz")
    assert "zzz" in str(info.value) and "a" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_all_nodes_failed_carries_attempts() -> None:
    err = AllNodesFailedError([Attempt("a", OSError("boom"), 0.5)])
    assert err.attempts[0].node_id == "a" and isinstance(err.last_error, OSError)
    assert "a: OSError: boom" in str(err)


def test_levels_are_ordered() -> None:
    assert DegradationLevel.Normal < DegradationLevel.Level1 < DegradationLevel.Emergency


def test_level_names_are_read_in_any_case() -> None:
    from resilience_mw import ConfigError, DegradationLevel
    from resilience_mw.model import parse_level

    assert parse_level("level3") is parse_level("LEVEL3") is parse_level(" Level3 ") is DegradationLevel.Level3
    assert parse_level("emergency") is DegradationLevel.Emergency
    with pytest.raises(ConfigError, match="level"):
        parse_level("level 3")
