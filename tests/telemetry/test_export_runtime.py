"""The durable OTLP export wired from settings: Runtime keywords, Flask config, the
environment, and the queue's fill as a degradation signal."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilience_mw import ConfigError
from resilience_mw.model import Sample
from resilience_mw.runtime import Runtime
from resilience_mw.telemetry.export import DiskQueue, MemoryQueue

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
trace_export = pytest.importorskip("opentelemetry.sdk.trace.export")
from resilience_mw.telemetry.export.exporters import DurableSpanExporter  # noqa: E402
from tests.telemetry.receiver import Receiver  # noqa: E402


def test_runtime_sends_through_the_configured_collectors_with_failover(tmp_path: Path) -> None:
    with Receiver() as a, Receiver() as b:
        a.stop()  # the first collector is down
        runtime = Runtime(otlp_endpoints=[a.url, b.url], otlp_queue="disk", otlp_queue_path=str(tmp_path / "q.db"),
                          start="off", sampler=lambda: Sample(1.0, 1.0))
        assert runtime.otlp is not None and isinstance(runtime.otlp.queue, DiskQueue)
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(trace_export.SimpleSpanProcessor(DurableSpanExporter(runtime.otlp)))
        with provider.get_tracer("t").start_as_current_span("through-b"):
            pass
        assert runtime.otlp.force_flush(10)
        assert b.span_names() == ["through-b"]
        runtime.stop()


def test_the_environment_configures_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_OTLP_ENDPOINTS", "http://otel-a:4318, http://otel-b:4318")
    monkeypatch.setenv("RESILIENCE_OTLP_MAX_BYTES", "1048576")
    monkeypatch.setenv("RESILIENCE_OTLP_WHEN_FULL", "drop_oldest")
    monkeypatch.setenv("RESILIENCE_OTLP_HEADERS", "Authorization=Bearer x,X-Tenant=shop")
    runtime = Runtime(start="off")
    otlp = runtime.settings.otlp
    assert otlp is not None
    assert [n.endpoint for n in otlp.endpoints] == ["http://otel-a:4318", "http://otel-b:4318"]
    assert otlp.endpoints[0].priority > otlp.endpoints[1].priority  # the first is preferred
    assert runtime.otlp is not None and isinstance(runtime.otlp.queue, MemoryQueue)
    assert (runtime.otlp.queue.max_bytes, runtime.otlp.queue.when_full) == (1 << 20, "drop_oldest")
    assert runtime.otlp.headers["X-Tenant"] == "shop"
    # the app's own settings win over the environment
    assert Runtime({"RESILIENCE_OTLP_ENDPOINTS": []}, start="off").otlp is None


def test_a_bad_environment_value_is_named_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_OTLP_ENDPOINTS", "http://otel:4318")
    monkeypatch.setenv("RESILIENCE_OTLP_MAX_AGE", "an hour")
    with pytest.raises(ConfigError) as info:
        Runtime(start="off")
    assert info.value.field == "RESILIENCE_OTLP_MAX_AGE" and "an hour" in str(info.value)


def test_the_disk_queue_needs_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        Runtime(otlp_endpoints=["http://otel:4318"], otlp_queue="disk", start="off")
    assert info.value.field == "RESILIENCE_OTLP_QUEUE_PATH"


def test_the_queues_fill_can_raise_the_level_as_memory_use() -> None:
    runtime = Runtime(otlp_endpoints=["http://127.0.0.1:9"], otlp_queue_signal=True, otlp_max_bytes=10_000,
                      start="off", sampler=lambda: Sample(5.0, 10.0))
    assert runtime.otlp is not None
    runtime.otlp.queue.put("traces", b"x" * 9_000, 1)  # 90 % full
    sampler = runtime.degradation._sampler
    assert sampler().memory == pytest.approx(90.0)
    runtime.stop()


def test_the_export_loads_no_opentelemetry_until_its_exporters_are_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from resilience_mw.runtime import Runtime\n"
        "import resilience_mw.flask_ext\n"
        "r = Runtime(otlp_endpoints=['http://127.0.0.1:9'], start='off')\n"
        "assert r.otlp is not None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus_client'))))\n"
        "r.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
