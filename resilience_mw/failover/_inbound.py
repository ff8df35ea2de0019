"""The inbound request a call to the upstream nodes is made for, so that a failover log
line names it apart from the upstream call (``GET /checkout (upstream GET /pay)``).

The WSGI middleware puts the request's environ, with its way of telling the request's
class, in :data:`request` while the app runs, once a node pool exists in this process
(:data:`wanted`; without a pool no failover line is ever written, and a request costs
nothing more); :func:`name` reads it when a line is written, :func:`criticality` when a
throttled upstream must choose which calls to send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from .._redact import redact_url
from ..model import Criticality

__all__ = ["Classify", "criticality", "name", "request", "wanted"]

#: the middleware's way of telling a request's class: ``classify(environ, path)``
Classify = Callable[[Any, str], Criticality]

#: true once a node pool has been made in this process (the middleware reads it per request)
wanted = False

#: the WSGI environ of the request being served in this context, and how its class is
#: told, while the app runs
request: ContextVar[tuple[Mapping[str, Any], Classify] | None] = ContextVar(
    "resilience_mw_inbound_request", default=None
)

# the path the client asked for when the middleware rerouted the request (the value of
# resilience_mw.wsgi.ORIGINAL_PATH_KEY, which this layer may not import)
_ORIGINAL_PATH = "resilience.original_path"


def name() -> str | None:
    """``METHOD /path`` of the request being served (the path it came in with, without
    its query string), or ``None`` outside one."""
    current = request.get()
    if current is None:
        return None
    environ = current[0]
    path = environ.get(_ORIGINAL_PATH) or f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
    return f"{environ.get('REQUEST_METHOD', 'GET')} {redact_url(path or '/', query=False)}"


def criticality() -> Criticality | None:
    """The class of the request being served (as the middleware tells it: a view's
    ``@criticality``, the route table, the trusted header), or ``None`` outside one."""
    current = request.get()
    if current is None:
        return None
    environ, classify = current
    return classify(environ, environ.get(_ORIGINAL_PATH) or environ.get("PATH_INFO", ""))
