"""Helpers shared by tests and benchmarks that start processes of their own."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask ``proc`` to stop with ``sig``; kill it if it has not exited within ``timeout``."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
