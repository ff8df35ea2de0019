"""Every public constructor and every RESILIENCE_* key, fed what users get wrong: each
mistake is a ConfigError at construction that names the setting as the user wrote it,
shows the value and says the rule."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from resilience_mw import (
    AlertRules,
    AutoDegradationManager,
    ConfigError,
    DegradationConfig,
    DetailedLogsFilter,
    FailoverManager,
    FeatureTable,
    GracefulDegradation,
    HealthChecker,
    NodePool,
    ServiceBackup,
    ServiceNode,
)
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.decorators import feature, with_fallback
from resilience_mw.degradation.load import Sample
from resilience_mw.flask_ext import Resilience
from resilience_mw.settings import SETTINGS, ConfigWarning
from resilience_mw.wsgi import ResilienceMiddleware

NAN, INF = math.nan, math.inf
NODES = [ServiceNode("a", "http://127.0.0.1:9", priority=2), ServiceNode("b", "http://127.0.0.1:10")]


def _deg() -> AutoDegradationManager:
    return AutoDegradationManager(sampler=lambda: Sample(1, 1))


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


# What goes wrong, by the kind of setting. Each value must be refused.
SECONDS = ["5", True, NAN, INF, -INF, -1, 0, object()]
SECONDS_OR_ZERO = ["5", True, NAN, INF, -1, object()]
COUNT = ["3", True, 2.5, NAN, INF, -1, 0]
SHARE = ["0.5", True, NAN, INF, -0.1, 1.5]
PERCENT = ["50", True, NAN, INF, -1, 101]
BOOL = ["false", "true", 0, 1, None]
PATHS = ["/api/checkout", ["api"], [1], 5, {"/a": 1}]
LEVEL = ["Level9", True, 2.5, "level 2", object()]  # (names in any case are levels: "level2" is)

#: constructor -> {keyword: bad values}; every other keyword keeps its default
CONSTRUCTORS: dict[str, tuple[Callable[..., Any], dict[str, list[Any]]]] = {
    "NodePool": (
        lambda **kw: NodePool(NODES, **kw),
        {
            "strategy": ["Priorty", 3, None.__class__],
            "failure_threshold": COUNT,
            "base_ejection_time": SECONDS,
            "max_ejection_time": SECONDS,
            "max_ejection_percent": [*SHARE[:4], 0, 101],
            "panic": BOOL,
            "latency_alpha": [*SHARE, 0],
            "power_of_two": BOOL,
            "clock": [5, "time"],
            "rng": [5],
        },
    ),
    "FailoverManager": (
        lambda **kw: FailoverManager(NODES, **kw),
        {"failure_threshold": COUNT, "panic": BOOL, "base_ejection_time": SECONDS},
    ),
    "ServiceBackup": (
        lambda **kw: ServiceBackup(NODES[0], NODES[1], **kw),
        {"failure_threshold": COUNT, "max_ejection_time": SECONDS},
    ),
    "ServiceNode": (
        lambda **kw: ServiceNode(**{"id": "a", "endpoint": "http://h", **kw}),
        {
            "id": ["", "  ", 5, None],
            "endpoint": ["", "h:80", "ftp://h", "http://", "http://h:99999", "http://h/?q", 5, None],
            "priority": [*COUNT[:3], -1],
            "weight": COUNT,
        },
    ),
    "HealthChecker": (
        HealthChecker,
        {
            "check_interval": SECONDS,
            "timeout": SECONDS,
            "path": ["health", 5, "/a b", "/h?x=1"],
            "unhealthy_threshold": COUNT,
            "healthy_threshold": COUNT,
            "jitter": [*SHARE[:4], -0.1, 2],
            "max_workers": COUNT,
            "max_body_bytes": COUNT,
        },
    ),
    "FailoverAdapter": (
        lambda **kw: FailoverAdapter(NODES, **kw),
        {
            "retry_statuses": ["503", [99], [True], 503],
            "idempotent_methods": ["GET", [""], [5]],
            "retry_non_idempotent": BOOL,
            "default_timeout": ["5", True, NAN, INF, -1, 0, (1, 2, 3), ("1", 2)],
            "deadline": ["5", True, NAN, INF, -1, 0],
            "max_body_bytes": ["1", True, 0, -1, 2.5],
            "pool_connections": [1, 0, True],
            "pool_maxsize": COUNT,
            "pool_block": BOOL,
            "failure_threshold": COUNT,
        },
    ),
    "ResilienceMiddleware": (
        lambda **kw: ResilienceMiddleware(_wsgi_app, _deg(), **kw),
        {
            "shed_level": LEVEL,
            "core_paths": PATHS,
            "exempt_paths": PATHS,
            "reroutes": [
                {"/search": "/search/lite"},
                {"/search": ["search/lite", "Level2"]},
                {"/search": ["/search/lite", "Level9"]},
                {"search": ["/search/lite", "Level2"]},
                ["/search"],
                "/search",
            ],
            "retry_after": ["30", True, -1, NAN, 2.5],
            "is_failure": [5, "500"],
            "count_exceptions": BOOL,
            "record_outcomes": BOOL,
            "on_first_request": [5],
        },
    ),
    "AlertRules": (
        AlertRules,
        {
            "failover_threshold": COUNT,
            "failover_window": SECONDS,
            "level_threshold": LEVEL,
            "min_interval": SECONDS_OR_ZERO,
            "failovers": BOOL,
        },
    ),
    "DegradationConfig": (
        DegradationConfig,
        {
            "cpu_threshold_l1": PERCENT,
            "memory_threshold_emergency": PERCENT,
            "error_rate_threshold": [*SHARE, 0, 0.5],
            "error_emergency_multiplier": ["4", True, NAN, INF, 2, 1],
            "error_window_seconds": [*SECONDS, 1e-320],
            "error_window_buckets": [*COUNT, 100_000],
            "min_requests": COUNT,
            "cooldown_seconds": SECONDS_OR_ZERO,
        },
    ),
    "AutoDegradationManager": (
        AutoDegradationManager,
        {"config": [{"cooldown_seconds": 1}, 5], "sampler": [5], "features": [{}], "clock": [5]},
    ),
    "AutoDegradationManager.start": (
        lambda **kw: _deg().start(**kw),
        {"check_interval": SECONDS},
    ),
    "GracefulDegradation": (
        lambda **kw: GracefulDegradation(_deg(), **kw),
        {"skip_primary_at": LEVEL, "fallback_on_error_at": LEVEL, "record": BOOL},
    ),
    "with_fallback": (
        lambda **kw: with_fallback(**{"fallback": lambda: None, **kw}),
        {"fallback": [5, "cached"], "skip_primary_at": LEVEL, "manager": [5], "record": BOOL},
    ),
    "feature": (
        lambda **kw: feature("analytics-x", **kw),
        {"fallback": [5], "manager": [5], "retry_after": ["30", True, -1, 2.5]},
    ),
    "FeatureTable": (
        FeatureTable,
        {"table": [{"x": "Level9"}, {"x": True}, ["x"], {"x": 2.5}]},
    ),
    "DetailedLogsFilter": (
        lambda **kw: DetailedLogsFilter(**{"manager": _deg(), **kw}),
        {"manager": [5], "feature": ["not-registered"], "min_level": ["INFO", True, None]},
    ),
}

CASES = [
    pytest.param(ctor, kw, bad, id=f"{label}-{kw}-{bad!r}"[:90])
    for label, (ctor, table) in CONSTRUCTORS.items()
    for kw, values in table.items()
    for bad in values
]


@pytest.mark.parametrize(("ctor", "keyword", "bad"), CASES)
def test_constructor_refuses_bad_value_naming_the_keyword(ctor: Any, keyword: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        ctor(**{keyword: bad})
    err = info.value
    # the user's own name for the setting (a field path may follow, e.g. reroutes['/x'][0])
    assert err.field.startswith(keyword) or keyword == "config", err
    assert err.field in str(err) and err.reason in str(err)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("ctor", "typo", "meant"),
    [
        (lambda **kw: FailoverManager(NODES, **kw), "failur_threshold", "failure_threshold"),
        (lambda **kw: FailoverAdapter(NODES, **kw), "retry_non_idempotant", "retry_non_idempotent"),
        (HealthChecker, "unhealty_threshold", "unhealthy_threshold"),
        (AlertRules, "failover_treshold", "failover_threshold"),
        (lambda **kw: ResilienceMiddleware(_wsgi_app, _deg(), **kw), "core_path", "core_paths"),
    ],
)
def test_misspelled_keyword_names_the_closest(ctor: Any, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        ctor(**{typo: 1})
    assert info.value.field == typo and f"did you mean {meant!r}" in str(info.value)


def test_unknown_feature_is_refused_at_decoration() -> None:
    with pytest.raises(ConfigError, match="not registered"):
        feature("analytics-x", manager=_deg())


def test_string_for_a_list_says_so() -> None:
    with pytest.raises(ConfigError, match="a string was given where a list of paths is expected"):
        ResilienceMiddleware(_wsgi_app, _deg(), core_paths="/api/checkout")


def test_dangerous_truthy_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="truthy"):
        FailoverAdapter(NODES, retry_non_idempotent="false")


def test_unreachable_emergency_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as info:
        DegradationConfig(error_rate_threshold=0.5)
    assert "cannot happen" in str(info.value) and "0.25" in str(info.value)


def test_config_object_or_keywords_not_both() -> None:
    from resilience_mw.config import HealthCheckConfig, PoolConfig

    assert HealthChecker(config=HealthCheckConfig(timeout=1)).config.timeout == 1
    assert FailoverManager(NODES, config=PoolConfig(failure_threshold=5)).config.failure_threshold == 5
    with pytest.raises(ConfigError, match="not both"):
        HealthChecker(config=HealthCheckConfig(), timeout=1)
    with pytest.raises(ConfigError, match="must be a HealthCheckConfig"):
        HealthChecker(config={"timeout": 1})  # type: ignore[arg-type]


def test_levels_by_name_member_or_value_everywhere() -> None:
    from resilience_mw import DegradationLevel as L

    for given in ("Level2", L.Level2, 2):
        m = ResilienceMiddleware(_wsgi_app, _deg(), shed_level=given, reroutes={"/s": ("/s/l", given)})
        assert m.shed_level is L.Level2 and m.reroutes["/s"] == ("/s/l", L.Level2)
        assert AlertRules(level_threshold=given).config.level_threshold is L.Level2
        assert GracefulDegradation(_deg(), skip_primary_at=given).skip_primary_at is L.Level2
    assert ResilienceMiddleware(_wsgi_app, _deg(), reroutes={"/s": ["/s/l", "Level2"]}).reroutes["/s"][1] is L.Level2
    assert str(L.Level3) == "Level3" and f"{L.Emergency}" == "Emergency"


# ------------------------------------------------------------------ Flask keys

FLASK_BAD: dict[str, list[Any]] = {
    "RESILIENCE_DEGRADATION": ["x", 5, ["cooldown_seconds"], {"cooldown_seconds": -1}, {"nope": 1}],
    "RESILIENCE_SAMPLE_INTERVAL": SECONDS,
    "RESILIENCE_SAMPLER": [5, "psutil"],
    "RESILIENCE_RESOURCE_SCOPE": ["machine", "auto", None],
    "RESILIENCE_START": ["sometimes", True, None],
    "RESILIENCE_SHED_LEVEL": LEVEL,
    "RESILIENCE_CORE_PATHS": PATHS,
    "RESILIENCE_EXEMPT_PATHS": PATHS,
    "RESILIENCE_REROUTES": [{"/search": "/search/lite"}, {"/s": ["s/lite", "Level2"]}, {"/s": ["/s/l", "Level9"]}, "x", ["/a"]],
    "RESILIENCE_RETRY_AFTER": ["30", True, -1, NAN, 2.5],
    "RESILIENCE_QUEUE_SIGNAL": ["yes", 1],  # (None: read behind trusted_proxies)
    "RESILIENCE_QUEUE_HEADER": ["", 5, None],
    "RESILIENCE_MAX_QUEUE_TIME": [0, -1, "1", True],
    "RESILIENCE_DEADLINE_HEADER": ["", 5],
    "RESILIENCE_CRITICALITY_HEADER": ["", 5],
    "RESILIENCE_CRITICALITY_ROUTES": ["x", {"/a": "urgent"}, {"a": "critical"}],
    "RESILIENCE_CRITICALITY_SHEDDING": ["yes", 1, None],
    "RESILIENCE_USER_KEY": ["", 5],
    "RESILIENCE_TRUSTED_PROXIES": [-1, 1.5, "one", 33],
    "RESILIENCE_USER_KEY_SECRET": ["", 5, "   "],
    "RESILIENCE_QUEUE_TOLERANCE": [0, -1, "10ms", True, NAN],
    "RESILIENCE_SHED_TABLE": [
        "x", {"Level9": {}}, {"Normal": {"sheddable": 1}}, {"Level1": {"critical_plus": 1}}, {"Level1": {"sheddable": 2}}, {"Level1": "all"},
    ],
    "RESILIENCE_ENFORCE": ["false", 0, None],
    "RESILIENCE_CONCURRENCY_LIMIT": ["on", 1, None],
    "RESILIENCE_CONCURRENCY_MIN_LIMIT": [0, 1.5, "two", None],
    "RESILIENCE_CONCURRENCY_MAX_LIMIT": [0, "many", None],
    "RESILIENCE_NODES": [
        "http://x",
        [{"id": "a"}],
        [{"endpoint": "http://x"}],
        [{"id": "a", "endpoint": "http://x", "bogus": 1}],
        [{"id": "a", "endpoint": "http://x", "priority": True}],
        [{"id": "a", "endpoint": "http://x"}, {"id": "a", "endpoint": "http://y"}],
        [5],
        {"id": "a"},
    ],
    "RESILIENCE_STRATEGY": ["Priorty", 5, None],
    "RESILIENCE_FAILOVER_OPTIONS": [
        "x",
        {"failure_threshold": 0},
        {"failur_threshold": 1},
        {"base_ejection_time": INF},
        {"panic": "false"},
        {"strategy": "Random"},
    ],
    "RESILIENCE_ADAPTER": ["x", {"default_timeout": "5"}, {"retry_non_idempotent": "false"}, {"deadlin": 1}],
    "RESILIENCE_HEALTH_CHECK": ["yes", 1, None],
    "RESILIENCE_HEALTH_CHECK_INTERVAL": SECONDS,
    "RESILIENCE_HEALTH_CHECK_UNHEALTHY_INTERVAL": [0, -1, NAN, "5", True],
    "RESILIENCE_HEALTH_CHECK_TIMEOUT": SECONDS,
    "RESILIENCE_HEALTH_CHECK_PATH": ["health", 5, None],
    "RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD": COUNT,
    "RESILIENCE_HEALTH_CHECK_HEALTHY_THRESHOLD": COUNT,
    "RESILIENCE_HEALTH_CHECK_JITTER": [2, -0.1, NAN, "0.1", True],
    "RESILIENCE_HEALTH_CHECK_MAX_WORKERS": COUNT,
    "RESILIENCE_HEALTH_CHECK_MAX_BODY_BYTES": COUNT,
    "RESILIENCE_STATE_URL": ["mysql://x/db", 5, "  "],
    "RESILIENCE_STATE_SYNC_INTERVAL": [0, -1, NAN, "1", True, 61],
    "RESILIENCE_STATE_EJECT_QUORUM": [0, "2", 1.5, True],
    "RESILIENCE_STATE_ERROR_RATE_SCOPE": ["host", 1, None],
    "RESILIENCE_STATE_RETRY_BUDGET_SCOPE": ["host", 1, None],
    "RESILIENCE_STATE_OUTLIER_SCOPE": ["host", 1, None],
    "RESILIENCE_STATE_SERVICE": ["two words", 5, "", "a/b"],
    "RESILIENCE_STATE_NAMESPACE": ["ns:x", 5, "", "x" * 101],
    "RESILIENCE_METRICS": ["prometheus", ["statsd"], 5],
    "RESILIENCE_METRICS_PATH": ["metrics", 5],
    "RESILIENCE_METRICS_REGISTRY": ["registry", 5],
    "RESILIENCE_LIVENESS_PATH": ["livez", 5],
    "RESILIENCE_READINESS_PATH": ["readyz", 5],
    "RESILIENCE_ADMIN_PATH": ["admin", 5],
    "RESILIENCE_ADMIN_TOKEN": ["", "   ", 123, " s3cret-token "],
    "RESILIENCE_ALERTS": ["yes", 1, {"failover_threshold": 0}, {"bogus": 1}],
    "RESILIENCE_OTLP_ENDPOINTS": ["http://otel:4318", ["otel:4318"], ["http://otel:4318/v1/traces"], [5], 5],
    "RESILIENCE_OTLP_QUEUE": ["tape", None, 1],
    "RESILIENCE_OTLP_QUEUE_PATH": [5, ""],
    "RESILIENCE_OTLP_MAX_BYTES": [0, "64MB", 1.5, True],
    "RESILIENCE_OTLP_MAX_AGE": [0, -1, NAN, "1h"],
    "RESILIENCE_OTLP_WHEN_FULL": ["block_oldest", None],
    "RESILIENCE_OTLP_BLOCK_TIMEOUT": [-1, NAN, 61, "1"],
    "RESILIENCE_OTLP_HEADERS": ["a=b", {"a": 1}],
    "RESILIENCE_OTLP_TIMEOUT": [0, NAN, "10"],
    "RESILIENCE_OTLP_QUEUE_SIGNAL": ["yes", 1],
}


def test_every_key_is_in_the_table() -> None:
    assert set(FLASK_BAD) == {s.key for s in SETTINGS}


FLASK_CASES = [
    pytest.param(key, bad, id=f"{key}-{bad!r}"[:90]) for key, values in FLASK_BAD.items() for bad in values
]


@pytest.mark.parametrize(("key", "bad"), FLASK_CASES)
def test_flask_key_refuses_bad_value_naming_the_key(key: str, bad: Any) -> None:
    app = Flask("bad")
    app.config[key] = bad
    with pytest.raises(ConfigError) as info:
        Resilience(app)
    err = info.value
    assert err.field.startswith(key), err
    assert err.field in str(err)
    if key == "RESILIENCE_ADMIN_TOKEN" and isinstance(bad, str):
        assert bad.strip() == "" or bad.strip() not in str(err)
    assert "resilience" not in app.extensions


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"RESILIENCE_NODES": [{"id": "a", "endpoint": "http://x"}, {"id": "b"}]}, "RESILIENCE_NODES[1].endpoint", "required"),
        ({"RESILIENCE_CORE_PATHS": "/api/checkout"}, "RESILIENCE_CORE_PATHS", "a string was given"),
        ({"RESILIENCE_NODES": "http://x"}, "RESILIENCE_NODES", "a string was given"),
        ({"RESILIENCE_REROUTES": {"/search": "/search/lite"}}, "RESILIENCE_REROUTES['/search']", "pair"),
        ({"RESILIENCE_HEALTH_CHECK_INTERVAL": 0}, "RESILIENCE_HEALTH_CHECK_INTERVAL", "seconds"),
        ({"RESILIENCE_FAILOVER_OPTIONS": {"failur_threshold": 2}}, "RESILIENCE_FAILOVER_OPTIONS.failur_threshold", "did you mean 'failure_threshold'"),
        ({"RESILIENCE_DEGRADATION": {"error_rate_threshold": 0.5}}, "RESILIENCE_DEGRADATION.error_rate_threshold", "cannot happen"),
    ],
)
def test_flask_errors_name_index_and_field(config: dict[str, Any], field: str, words: str) -> None:
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(ConfigError) as info:
        Resilience(app)
    assert info.value.field == field and words in str(info.value)


def test_keyword_options_are_named_by_keyword() -> None:
    with pytest.raises(ConfigError) as info:
        Resilience(Flask("kw"), core_paths="/x")
    assert info.value.field == "core_paths"


def test_unknown_key_warns_with_the_closest_name() -> None:
    app = Flask("typo")
    app.config["RESILIENCE_NODE"] = [{"id": "a", "endpoint": "http://x"}]
    with pytest.warns(ConfigWarning, match="did you mean RESILIENCE_NODES"):
        Resilience(app, start="off")


def test_reroute_shape_from_the_docs_works() -> None:
    app = Flask("reroute")
    app.config["RESILIENCE_REROUTES"] = {"/search": ["/search/lite", "Level2"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = Resilience(app, start="off").state(app)
    assert state.middleware.reroutes["/search"][0] == "/search/lite"


def test_settings_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_RESILIENCE_SHED_LEVEL", "Level3")
    monkeypatch.setenv("FLASK_RESILIENCE_CORE_PATHS", '["/api/checkout"]')
    monkeypatch.setenv("FLASK_RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD", "2")
    monkeypatch.setenv("FLASK_RESILIENCE_DEGRADATION__cooldown_seconds", "5")
    app = Flask("env")
    app.config.from_prefixed_env()
    state = Resilience(app, start="off").state(app)
    assert str(state.middleware.shed_level) == "Level3"
    assert state.middleware.core_paths == ("/api/checkout",)
    assert state.settings.health_check is not None and state.settings.health_check.unhealthy_threshold == 2
    assert state.degradation.config.cooldown_seconds == 5
    monkeypatch.setenv("FLASK_RESILIENCE_HEALTH_CHECK_TIMEOUT", "true")
    bad = Flask("env-bad")
    bad.config.from_prefixed_env()
    with pytest.raises(ConfigError, match="RESILIENCE_HEALTH_CHECK_TIMEOUT=True: must be a number of seconds, not a bool"):
        Resilience(bad)


def test_every_health_ejection_and_adapter_option_is_reachable_from_flask() -> None:
    import dataclasses

    from resilience_mw.config import AdapterConfig, HealthCheckConfig, PoolConfig

    app = Flask("all")
    app.config.update(
        RESILIENCE_NODES=[{"id": "a", "endpoint": "http://127.0.0.1:9"}],
        RESILIENCE_STRATEGY="RoundRobin",
        RESILIENCE_FAILOVER_OPTIONS={"failure_threshold": 7, "panic": True, "power_of_two": True},
        RESILIENCE_ADAPTER={"deadline": 3, "retry_non_idempotent": True},
        RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD=4,
        RESILIENCE_HEALTH_CHECK_HEALTHY_THRESHOLD=5,
        RESILIENCE_HEALTH_CHECK_JITTER=0,
        RESILIENCE_HEALTH_CHECK_MAX_WORKERS=3,
        RESILIENCE_HEALTH_CHECK_MAX_BODY_BYTES=100,
    )
    state = Resilience(app, start="off").state(app)
    assert state.failover is not None and state.failover.config == PoolConfig(
        strategy="RoundRobin", failure_threshold=7, panic=True, power_of_two=True
    )
    assert state.adapter is not None and state.adapter.manager is state.failover
    assert state.adapter.failover_config == AdapterConfig(deadline=3, retry_non_idempotent=True)
    assert state.health_checker is not None and state.health_checker.config == HealthCheckConfig(
        unhealthy_threshold=4, healthy_threshold=5, jitter=0, max_workers=3, max_body_bytes=100
    )
    keys = {s.key for s in SETTINGS}
    for f in dataclasses.fields(HealthCheckConfig):
        assert "RESILIENCE_HEALTH_CHECK_" + f.name.removeprefix("check_").upper() in keys


def test_a_renamed_setting_still_works_under_its_old_name_with_a_warning() -> None:
    from resilience_mw.exceptions import ConfigWarning
    from resilience_mw.runtime import Runtime

    app = Flask("renamed")
    app.config["RESILIENCE_CHECK_INTERVAL"] = 0.25
    with pytest.warns(ConfigWarning, match="RESILIENCE_CHECK_INTERVAL is now RESILIENCE_SAMPLE_INTERVAL"):
        state = Resilience(app, start="off").state(app)
    assert state.settings.sample_interval == 0.25
    with pytest.warns(ConfigWarning, match="RESILIENCE_SAMPLE_INTERVAL"):
        assert Runtime(check_interval=0.5, start="off").settings.sample_interval == 0.5
    with pytest.warns(ConfigWarning), pytest.raises(ConfigError, match="check_interval"):
        Runtime(check_interval=0)  # the error names what the user wrote
