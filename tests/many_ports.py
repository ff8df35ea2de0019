"""Many HTTP nodes in one process: one asyncio server listening on ``count`` ports of
127.0.0.1, each answering every request with ``200 ok`` after ``delay`` seconds
(keep-alive, a ``Set-Cookie`` on every answer so a client that keeps cookies shows it).

Run as ``python -m tests.many_ports COUNT DELAY``: it prints the ports as one JSON line,
then answers each ``stats`` line on stdin with a JSON line (requests per port, requests
that carried a Cookie header) and exits on EOF or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys


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
