"""The inbound request a call to the upstream nodes is made for, so that a failover log
line names it apart from the upstream call (``GET /checkout (upstream GET /pay)``).

The WSGI middleware puts the request's environ in :data:`request` while the app runs,
once a node pool exists in this process (:data:`wanted`; without a pool no failover
line is ever written, and a request costs nothing more); :func:`name` reads it when a
line is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from .._redact import redact_url

__all__ = ["name", "request", "wanted"]

#: true once a node pool has been made in this process (the middleware reads it per request)
wanted = False

#: the WSGI environ of the request being served in this context, while the app runs
request: ContextVar[Mapping[str, Any] | None] = ContextVar("resilience_mw_inbound_request", default=None)

# the path the client asked for when the middleware rerouted the request (the value of
# resilience_mw.wsgi.ORIGINAL_PATH_KEY, which this layer may not import)
_ORIGINAL_PATH = "resilience.original_path"


def name() -> str | None:
    """``METHOD /path`` of the request being served (the path it came in with, without
    its query string), or ``None`` outside one."""
    environ = request.get()
    if environ is None:
        return None
    path = environ.get(_ORIGINAL_PATH) or f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
    return f"{environ.get('REQUEST_METHOD', 'GET')} {redact_url(path or '/', query=False)}"
