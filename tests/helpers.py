"""Helpers shared by tests and benchmarks that start processes of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator


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
