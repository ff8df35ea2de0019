"""A plain WSGI app whose spans go through the durable OTLP exporter, with the SDK as
docs/guide/telemetry.rst shows it, into one disk queue file shared by every gunicorn
worker (tests/telemetry/test_export_gunicorn.py). Settings come from the environment:
``OTLP_ENDPOINT`` (the collector's base URL) and ``OTLP_QUEUE_PATH`` (the shared file).

``/span`` ends one span (queued in the file before the answer is sent) and answers
``{"pid", "span_id"}``; ``/whoami`` answers ``{"pid"}`` and emits nothing. Each worker
posts with ``X-Worker-Pid`` (who sent a batch) and puts its pid in the spans' resource
(who made it): a batch one worker queued may be sent by the other."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from resilience_mw import ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.telemetry.export import DiskQueue, OTLPExport
from resilience_mw.telemetry.export.exporters import DurableSpanExporter

PID = os.getpid()  # (imported in each worker: no --preload)

collectors = requests.Session()
collectors.mount("http://collector/", FailoverAdapter(
    [ServiceNode("otel", os.environ["OTLP_ENDPOINT"])], retry_non_idempotent=True,
))
# a short back-off: the test's outage lasts seconds, not minutes
export = OTLPExport(collectors, "http://collector", queue=DiskQueue(os.environ["OTLP_QUEUE_PATH"]),
                    headers={"X-Worker-Pid": str(PID)}, timeout=(1.0, 5.0), backoff=0.05, max_backoff=0.5)
provider = TracerProvider(resource=Resource({"service.name": "otlp-app", "worker.pid": PID}))
provider.add_span_processor(SimpleSpanProcessor(DurableSpanExporter(export)))
tracer = provider.get_tracer("otlp-app")


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    answer: dict[str, Any] = {"pid": PID}
    if environ["PATH_INFO"] == "/span":
        with tracer.start_as_current_span("GET /span") as span:
            answer["span_id"] = format(span.get_span_context().span_id, "016x")
    body = json.dumps(answer).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
