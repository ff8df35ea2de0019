"""Many HTTP nodes in one process: one asyncio server listening on ``count`` ports of
127.0.0.1, each answering every request with ``200 ok`` after ``delay`` seconds
(keep-alive, a ``Set-Cookie`` on every answer so a client that keeps cookies shows it).

Run as ``python -m tests.many_ports COUNT DELAY``: it prints the ports as one JSON line,
then answers each ``stats`` line on stdin with a JSON line (requests per port, requests
that carried a Cookie header) and exits on EOF or after ``--max-seconds``.
:class:`ManyNodes` runs it for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ManyNodes:
    """This script in a process of its own (its event loop does not compete with the
    client for the GIL); a context manager that stops it."""

    def __init__(self, count: int, delay: float, max_seconds: float = 300) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.many_ports", str(count), str(delay), "--max-seconds", str(max_seconds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        #: the ports, one per node, on 127.0.0.1
        self.ports: list[int] = json.loads(self.proc.stdout.readline())

    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def stats(self) -> dict[str, Any]:
        """Requests per port so far (``min``, ``total``, ``ports_hit``) and ``with_cookie``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        found: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return found

    def __enter__(self) -> ManyNodes:
        return self

    def __exit__(self, *exc: object) -> None:
        from tests.helpers import stop_process

        stop_process(self.proc)


class Nodes:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: dict[int, int] = {}
        self.with_cookie = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"\ncookie:" in head.lower():
                    self.with_cookie += 1
                self.requests[port] = self.requests.get(port, 0) + 1
                await asyncio.sleep(self.delay)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
                    b"Set-Cookie: node=" + str(port).encode() + b"; Path=/\r\n\r\nok"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stats(self) -> dict[str, object]:
        counts = list(self.requests.values())
        return {
            "ports_hit": len(counts),
            "total": sum(counts),
            "min": min(counts, default=0),
            "with_cookie": self.with_cookie,
        }


async def main(count: int, delay: float, max_seconds: float) -> None:
    nodes = Nodes(delay)
    servers = [await asyncio.start_server(nodes.serve, "127.0.0.1", 0, backlog=256) for _ in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := await reader.readline():
            if line.strip() == b"stats":
                print(json.dumps(nodes.stats()), flush=True)

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(commands(), max_seconds)  # bounded: stops by itself


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("count", type=int)
    ap.add_argument("delay", type=float)
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()
    asyncio.run(main(args.count, args.delay, args.max_seconds))
