"""A real redis-server on 127.0.0.1 for tests (Debian's ``redis-server`` package; the
project's scripts install it). Missing, it fails the test that needs it: no skip."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import stop_process
from tests.nodes import free_port


class RedisServer:
    """``redis-server`` on a free port, no persistence; :meth:`kill` and :meth:`start`
    it again on the same port."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None, "redis-server is not installed (scripts/system-deps installs it)"
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextmanager
def state_url_for(kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL of ``kind`` (``sqlite``: a file in ``tmp_path``; ``redis``: a fresh
    redis-server, stopped at the end)."""
    if kind == "sqlite":
        yield f"sqlite://{tmp_path}/state.db"
        return
    server = RedisServer(tmp_path).start()
    try:
        yield server.url
    finally:
        server.stop()
