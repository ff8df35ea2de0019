"""A plain WSGI app configured by its environment alone, as a deployment is: every
``RESILIENCE_*`` variable is a setting, its value read as JSON when it is JSON
(``RESILIENCE_NODES='[{"id": "n1", "endpoint": "http://..."}]'``,
``RESILIENCE_HEALTH_CHECK_INTERVAL=0.5``) and as a string otherwise
(``RESILIENCE_METRICS_PATH=/metrics``). Served by gunicorn in
tests/telemetry/test_metrics_gunicorn.py and tests/system/test_alerts_prometheus.py.

Paths: ``/whoami`` (this worker's pid and each node's state), ``/call`` (one request
through the failover adapter to the nodes), ``/mark?node=n1&healthy=0`` (set a node's
health in this worker only, as an operator's manual update would), anything else
``hello``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import requests

from resilience_mw.model import NodeHealth
from resilience_mw.runtime import Runtime


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


runtime = Runtime({key: _value(value) for key, value in os.environ.items() if key.startswith("RESILIENCE_")})
session = requests.Session()
if runtime.adapter is not None:
    session.mount("http://upstream/", runtime.adapter)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path, pool = environ["PATH_INFO"], runtime.pool
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    doc: dict[str, Any]
    if path == "/whoami":
        doc = {"pid": os.getpid(), "nodes": {} if pool is None else {n.id: pool.phase(n.id).value for n in pool.nodes}}
    elif path == "/call":
        doc = {"pid": os.getpid(), "status": session.get("http://upstream/work", timeout=2).status_code}
    elif path == "/mark" and pool is not None:
        node, healthy = query["node"], query.get("healthy") == "1"
        pool.update_health(node, NodeHealth(node, healthy, time.monotonic()))
        doc = {"pid": os.getpid(), "node": node, "state": pool.phase(node).value}
    else:
        doc = {"hello": True}
    body = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = runtime.wrap(app)
