"""A plain WSGI app (no framework) with everything the library gives, from Runtime alone;
tests/test_runtime.py serves it with gunicorn. Settings come from the environment:
``PLAIN_NODES`` (comma-separated upstream URLs), ``PLAIN_STATE_URL``, ``PLAIN_TOKEN``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from resilience_mw.runtime import Runtime


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/modules":  # what this process has imported
        body = json.dumps({"flask": "flask" in sys.modules, "pid": os.getpid()}).encode()
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


runtime = Runtime(
    nodes=[{"id": f"n{i}", "endpoint": url} for i, url in enumerate(os.environ["PLAIN_NODES"].split(","))],
    state_url=os.environ["PLAIN_STATE_URL"],
    state_sync_interval=0.2,
    health_check_interval=0.2,
    health_check_timeout=0.5,
    metrics_path="/metrics",
    admin_token=os.environ["PLAIN_TOKEN"],
)
application = runtime.wrap(hello)
