"""Helpers shared by tests and benchmarks that start processes of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask ``proc`` to stop with ``sig``; kill it if it has not exited within ``timeout``."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def library_threads() -> list[threading.Thread]:
    """The library's live threads (all named ``resilience_mw...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("resilience_mw") and t.is_alive()]


@contextlib.contextmanager
def cpu_hog(seconds: float, processes: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Other programs keeping every CPU busy (one spinning process per CPU, not part of
    the service under test), for at most ``seconds``: each stops by itself then, and all
    are stopped when the block ends."""
    count = processes or os.cpu_count() or 1
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(5)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The WSGI ``app`` on a real threaded server on 127.0.0.1; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; its last truth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())
