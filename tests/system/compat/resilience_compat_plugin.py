"""A pytest plugin that runs another project's test suite with FailoverAdapter as the
transport of every ``requests.Session`` (loaded with ``-p resilience_compat_plugin``, this folder on ``PYTHONPATH``: the
suites have a ``tests`` package of their own).

``RESILIENCE_COMPAT_MODE``:

* ``plain``: requests' own HTTPAdapter (the baseline, with the same guard);
* ``one``: one node per origin, whose endpoint is that origin: the adapter should be
  invisible;
* ``two``: a refused node first (never ejected, so every request fails over), then the
  origin;
* ``extension``: every ``flask.Flask`` gets the Resilience extension, threads started
  eagerly (Flask's own suite); the threads still alive at the end are reported.

In every mode a guard refuses connections and name lookups outside loopback before
anything leaves the machine, so a test that would reach out fails here instead.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

MODE = os.environ.get("RESILIENCE_COMPAT_MODE", "plain")
#: requests sent through a FailoverAdapter (reported at the end: proves the run used it)
_SENT = itertools.count()
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _loopback(host):
        raise socket.gaierror(socket.EAI_NONAME, f"compat guard: no lookups outside loopback ({host})")
    return _real_getaddrinfo(host, *args, **kwargs)


def _checked(address: Any) -> None:
    if isinstance(address, tuple) and not _loopback(address[0]):
        raise ConnectionRefusedError(f"compat guard: no connections outside loopback ({address[0]})")


def _connect(self: socket.socket, address: Any) -> None:
    _checked(address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _checked(address)
    return _real_connect_ex(self, address)


socket.getaddrinfo = _getaddrinfo
socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


class OriginRouter(HTTPAdapter):
    """Sends each request through a FailoverAdapter whose live node is its own origin.

    The FailoverAdapters share the router's connection pools, so tests that look at
    ``session.adapters["https://"].poolmanager`` see the pools the requests used. A URL
    with no valid host (a redirect to ``http://:1``) would not match a real mount's
    prefix, so it goes through plain requests, as it would then.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self._lock = threading.Lock()
        self._adapters: dict[str, Any] = {}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        from resilience_mw import _http

        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _http.POOL_CLASSES

    def _adapter_for(self, url: str) -> Any:
        from resilience_mw import ServiceNode
        from resilience_mw.adapter import FailoverAdapter

        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018
        except ValueError:
            return None
        host = parts.hostname or ""
        if not host:
            return None
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        origin = f"{parts.scheme.lower()}://{netloc}"
        with self._lock:
            adapter = self._adapters.get(origin)
            if adapter is None:
                nodes = [ServiceNode("origin", origin, priority=1)]
                if self.mode == "two":
                    dead = ServiceNode("refused", f"{parts.scheme.lower()}://127.0.0.1:{_dead_port()}", priority=2)
                    nodes.insert(0, dead)
                # the refused node is the harness's own: every request fails over, on purpose
                adapter = FailoverAdapter(nodes, failure_threshold=1_000_000, retry_budget_ratio=None)
                adapter.poolmanager = self.poolmanager
                adapter.proxy_manager = self.proxy_manager
                self._adapters[origin] = adapter
        return adapter

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.mode = state.pop("mode")
        super().__setstate__(state)
        self._lock = threading.Lock()
        self._adapters = {}

    def send(self, request: Any, **kwargs: Any) -> Any:
        adapter = self._adapter_for(request.url)
        if adapter is None:
            return super().send(request, **kwargs)
        next(_SENT)
        return adapter.send(request, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._adapters = {}
        super().close()  # the pools are the router's


if MODE in ("one", "two"):
    _real_init = requests.Session.__init__

    def _init(self: requests.Session, *args: Any, **kwargs: Any) -> None:
        _real_init(self, *args, **kwargs)
        # one router per prefix, as requests mounts one HTTPAdapter per prefix
        self.mount("https://", OriginRouter(MODE))
        self.mount("http://", OriginRouter(MODE))

    requests.Session.__init__ = _init  # type: ignore[method-assign]


#: Flask apps that got the extension (``extension`` mode), and those still alive
_APPS = itertools.count()
_LIVE_APPS: Any = None

if MODE == "extension":
    import flask

    from resilience_mw.flask_ext import Resilience

    _real_flask_init = flask.Flask.__init__

    def _flask_init(self: flask.Flask, *args: Any, **kwargs: Any) -> None:
        _real_flask_init(self, *args, **kwargs)
        # the extension as an app would use it, threads running from the start: the
        # sampler, and health checks of a node that refuses connections (loopback)
        self.config.update(
            RESILIENCE_START="eager",
            RESILIENCE_SAMPLE_INTERVAL=0.5,
            RESILIENCE_NODES=[{"id": "upstream", "endpoint": f"http://127.0.0.1:{_dead_port()}"}],
            RESILIENCE_HEALTH_CHECK_INTERVAL=0.5,
        )
        Resilience(self)
        next(_APPS)
        _LIVE_APPS.add(self)

    flask.Flask.__init__ = _flask_init  # type: ignore[method-assign]
    import weakref

    _LIVE_APPS = weakref.WeakSet()


def _library_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("resilience_mw") and t.is_alive())


def pytest_report_header(config: pytest.Config) -> str:
    return f"resilience_mw compat mode: {MODE}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    sent = next(_SENT)
    terminalreporter.write_line(f"resilience_mw compat: {sent} requests sent through FailoverAdapter")
    if MODE == "extension":
        import gc
        import time

        at_end = _library_threads()
        gc.collect()  # the suite has dropped every app: their threads end with them
        deadline = time.monotonic() + 2.0
        while _library_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        terminalreporter.write_line(
            f"resilience_mw compat: {next(_APPS)} apps with the extension; library threads at the end "
            f"{at_end}, after collection {_library_threads()}; apps alive {len(_LIVE_APPS)}"
        )
