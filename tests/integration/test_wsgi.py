"""ResilienceMiddleware through werkzeug's LintMiddleware and a real server."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.serving import make_server
from werkzeug.test import Client

from resilience_mw import ConfigError, DegradationConfig, DegradationLevel
from resilience_mw.degradation import AutoDegradationManager
from resilience_mw.degradation.load import Sample
from resilience_mw.wsgi import LEVEL_KEY, ORIGINAL_PATH_KEY, ResilienceMiddleware, record_failure

L = DegradationLevel


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("handler crashed")
    status = {"/fail": "500 INTERNAL SERVER ERROR", "/missing": "404 NOT FOUND"}.get(path, "200 OK")
    body = json.dumps({"path": path, "level": int(environ.get(LEVEL_KEY, -1))}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Stream:
    """A lazy body that may fail half-way and records close()."""

    closed = 0

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def __iter__(self) -> Iterator[bytes]:
        yield b"part1,"
        if self.fail:
            raise OSError("upstream died mid-stream")
        yield b"part2"

    def close(self) -> None:
        Stream.closed += 1


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Stream(fail=environ["PATH_INFO"] == "/stream-fail")


@pytest.fixture
def deg() -> AutoDegradationManager:
    return AutoDegradationManager(DegradationConfig(cooldown_seconds=0), sampler=lambda: Sample(1, 1))


class BufferedClient(Client):
    """Reads and closes every response, as a real server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def client(inner: Any, deg: AutoDegradationManager, **kw: Any) -> Client:
    mw = ResilienceMiddleware(inner, deg, **kw)
    return BufferedClient(LintMiddleware(mw))


def counts(deg: AutoDegradationManager) -> tuple[int, int]:
    return deg.window.counts()


def test_outcomes_5xx_and_exceptions_fail_4xx_does_not(deg: AutoDegradationManager) -> None:
    c = client(app, deg)
    assert c.get("/ok").status_code == 200
    assert c.get("/missing").status_code == 404
    assert c.get("/fail").status_code == 500
    with pytest.raises(RuntimeError):
        c.get("/boom")
    assert counts(deg) == (4, 2)


def test_streaming_body_that_breaks_turns_into_a_failure_and_is_closed(deg: AutoDegradationManager) -> None:
    Stream.closed = 0
    c = client(streaming_app, deg)
    r = c.get("/stream")
    assert r.get_data() == b"part1,part2"
    assert counts(deg) == (1, 0)
    with pytest.raises(OSError):
        c.get("/stream-fail")
    assert counts(deg) == (2, 1)
    assert Stream.closed == 2


def test_level_in_environ(deg: AutoDegradationManager) -> None:
    deg.force_level(L.Level2)
    assert client(app, deg).get("/x").json == {"path": "/x", "level": 2}


def test_shedding_at_emergency_spares_core_and_health(deg: AutoDegradationManager) -> None:
    called: list[str] = []

    def spy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        called.append(environ["PATH_INFO"])
        return app(environ, start_response)

    c = client(spy, deg, core_paths=("/api/pay",), retry_after=17)
    deg.force_level(L.Level3)
    assert c.get("/browse").status_code == 200
    deg.force_level(L.Emergency)
    r = c.get("/browse")
    # a forced level lasts until cleared: up to retry_after, jittered over its upper half
    assert r.status_code == 503 and 9 <= int(r.headers["Retry-After"]) <= 17
    assert r.json == {"error": "service overloaded", "level": "Emergency", "retry_after": int(r.headers["Retry-After"])}
    assert c.get("/api/pay/now").status_code == 200
    assert c.get("/readyz").status_code == 200
    assert called == ["/browse", "/api/pay/now", "/readyz"]
    # shed responses and health probes are not counted
    assert counts(deg) == (2, 0)


def test_exempt_paths_never_counted(deg: AutoDegradationManager) -> None:
    c = client(app, deg, exempt_paths=("/metrics",))
    for _ in range(5):
        c.get("/metrics")
    assert counts(deg) == (0, 0)


def test_reroute_by_level(deg: AutoDegradationManager) -> None:
    seen: list[tuple[str, str | None]] = []

    def spy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append((environ["PATH_INFO"], environ.get(ORIGINAL_PATH_KEY)))
        return app(environ, start_response)

    c = client(spy, deg, reroutes={"/search": ("/search/lite", L.Level2)})
    deg.force_level(L.Level1)
    c.get("/search")
    deg.force_level(L.Level2)
    c.get("/search")
    assert seen == [("/search", None), ("/search/lite", "/search")]


def test_custom_failure_rule(deg: AutoDegradationManager) -> None:
    c = client(app, deg, is_failure=lambda code: code >= 400)
    c.get("/missing")
    assert counts(deg) == (1, 1)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"shed_level": "Level9"}, "shed_level"),
        ({"retry_after": -1}, "retry_after"),
        ({"core_paths": ["x"]}, "core_paths[0]"),
    ],
)
def test_config_errors(deg: AutoDegradationManager, kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ResilienceMiddleware(app, deg, **kw)
    assert info.value.field == field


def test_real_server_many_threads(deg: AutoDegradationManager) -> None:
    server = make_server("127.0.0.1", 0, ResilienceMiddleware(app, deg), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_port}"
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        with requests.Session() as s:
            for k in range(25):
                try:
                    r = s.get(f"{url}/{'fail' if (i + k) % 5 == 0 else 'ok'}", timeout=5)
                    assert r.status_code in (200, 500)
                except BaseException as exc:
                    errors.append(exc)

    try:
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        server.shutdown()
    assert not errors
    assert counts(deg) == (200, 40)


class SelfIterating:
    """Like werkzeug's ClosingIterator: __iter__ returns self and close() has effects."""

    def __init__(self) -> None:
        self.chunks = iter([b"a", b"b", b"c"])
        self.closed = 0

    def __iter__(self) -> SelfIterating:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        self.closed += 1


def serve_directly(deg: AutoDegradationManager, status: str, inner: Any) -> Any:
    """The middleware's body for an app that answers ``status`` with ``inner``, called as
    a server would, so a test can iterate and close it by hand."""

    def app_(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(status, [])
        return inner

    return ResilienceMiddleware(app_, deg)({"PATH_INFO": "/s", "REQUEST_METHOD": "GET"}, lambda *a: None)


def test_early_close_closes_inner_body_once_and_is_not_a_failure(deg: AutoDegradationManager) -> None:
    inner = SelfIterating()
    body = serve_directly(deg, "200 OK", inner)
    next(iter(body))  # the client goes away after the first chunk
    body.close()
    assert inner.closed == 1
    assert counts(deg) == (1, 0)


def test_close_before_iterating_still_closes_and_records(deg: AutoDegradationManager) -> None:
    """A server that gives up before the first chunk (client gone) still calls close()."""
    inner = SelfIterating()
    body = serve_directly(deg, "503 SERVICE UNAVAILABLE", inner)
    body.close()
    body.close()  # a second close is harmless
    assert inner.closed == 1
    assert counts(deg) == (1, 1)


def test_record_failure_counts_each_request_once(deg: AutoDegradationManager) -> None:
    """A view that serves 200 after its primary failed is one failure, counted once."""

    def app_(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/fallback":  # decided before the response: counted once
            record_failure(environ, deg)
            record_failure(environ, deg)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"served"
        if environ["PATH_INFO"] == "/late":  # decided while streaming: the success turns
            record_failure(environ, deg)

    c = client(app_, deg)
    assert c.get("/fallback").status_code == 200
    assert counts(deg) == (1, 1)
    assert c.get("/late").status_code == 200
    assert counts(deg) == (2, 2)
    assert c.get("/fine").status_code == 200
    assert counts(deg) == (3, 2)


def test_exceptions_not_counted_when_so_configured(deg: AutoDegradationManager) -> None:
    c = client(streaming_app, deg, count_exceptions=False)
    with pytest.raises(OSError):
        c.get("/stream-fail")
    with pytest.raises(RuntimeError):
        client(app, deg, count_exceptions=False).get("/boom")
    assert counts(deg) == (1, 0)  # the stream's 200 only


class FileWrapper:
    """A server's wsgi.file_wrapper (gunicorn sends these with sendfile)."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike, self.blksize = filelike, blksize

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.filelike.read(self.blksize), b"")

    def close(self) -> None:
        self.filelike.close()


def test_file_wrapper_body_is_passed_through_for_sendfile(deg: AutoDegradationManager, tmp_path: Any) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")

    def app_(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/csv")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    environ = {"PATH_INFO": "/report", "REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}
    body = ResilienceMiddleware(app_, deg)(environ, lambda *a: None)
    assert isinstance(body, FileWrapper)  # the server can still use sendfile
    assert b"".join(body) == b"a,b\n1,2\n"
    body.close()
    assert counts(deg) == (1, 0)


def test_a_function_file_wrapper_body_is_passed_through_untouched(deg: AutoDegradationManager, tmp_path: Any) -> None:
    """uWSGI's wsgi.file_wrapper is a function that returns the file itself, and it
    uses sendfile only when the app returns that very object."""
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n")
    handed: list[Any] = []

    def uwsgi_file_wrapper(filelike: Any, blksize: int = 8192) -> Any:
        handed.append(filelike)
        return filelike

    def app_(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/csv")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    environ = {"PATH_INFO": "/report", "REQUEST_METHOD": "GET", "wsgi.file_wrapper": uwsgi_file_wrapper}
    body = ResilienceMiddleware(app_, deg)(environ, lambda *a: None)
    assert body is handed[0]  # the same object: sendfile is kept
    body.close()
    assert counts(deg) == (1, 0)


def test_exc_info_reaches_the_server_only_when_the_app_gave_one(deg: AutoDegradationManager) -> None:
    """PEP 3333 servers and middlewares pass exc_info only when they have one; a server
    whose start_response takes two arguments must not get a third."""
    calls: list[tuple[Any, ...]] = []

    def two_argument_start_response(status: str, headers: list[tuple[str, str]]) -> Any:
        calls.append((status,))
        return lambda data: None

    def recording_start_response(*args: Any) -> Any:
        calls.append(args)
        return lambda data: None

    def failing(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"oops"]

    environ = {"PATH_INFO": "/x", "REQUEST_METHOD": "GET"}
    assert ResilienceMiddleware(app, deg)(dict(environ), two_argument_start_response)
    ResilienceMiddleware(failing, deg)(dict(environ), recording_start_response)
    assert calls[0] == ("200 OK",)
    assert len(calls[1]) == 3 and calls[1][2][0] is ValueError
