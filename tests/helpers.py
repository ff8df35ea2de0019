"""Helpers shared by tests and benchmarks that start processes of their own."""

from __future__ import annotations

import signal
import subprocess
import threading


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
