"""``python -m demo_app [--port 8000] [--scenario]``: the live dashboard, or the ported design's example.

The dashboard starts three upstream node processes and the demo Flask app, all on
127.0.0.1, prints the URL, and stops every process it started on Ctrl-C (or after
``--duration`` seconds).
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import threading
from types import FrameType

from werkzeug.serving import make_server


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo_app", description=__doc__)
    ap.add_argument("--port", type=int, default=8000, help="dashboard port on 127.0.0.1 (default 8000)")
    ap.add_argument("--scenario", action="store_true", help="run the ported design's complete example and exit")
    ap.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
    ap.add_argument("--no-traffic", action="store_true", help="do not send background demo traffic")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log: the dashboard polls

    if args.scenario:
        from .scenario import run_scenario

        return run_scenario()

    from .app import create_app
    from .cluster import Cluster

    if not _port_free(args.port):
        print(
            f"error: port {args.port} on 127.0.0.1 is already in use; try --port {args.port + 1}",
            file=sys.stderr,
        )
        return 2
    cluster = Cluster()
    server = make_server("127.0.0.1", args.port, None, threaded=True)  # type: ignore[arg-type]
    print("starting upstream nodes (primary, secondary, tertiary)...", flush=True)
    cluster.start()
    app = create_app(cluster)
    server.app = app
    demo = app.extensions["demo"]
    url = f"http://127.0.0.1:{server.server_port}/"
    demo.start(url.rstrip("/"), traffic=not args.no_traffic)
    print(f"resilience_mw demo running at {url}  (Ctrl-C to stop)", flush=True)
    for node in cluster.nodes.values():
        print(f"  node {node.node_id:<9} priority {node.priority:<3} {node.url}", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
    thread.start()
    try:
        stop.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        server.shutdown()
        demo.stop()
        cluster.stop()
        print("stopped all demo processes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
