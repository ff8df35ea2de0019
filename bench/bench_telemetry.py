"""The durable OTLP export through a collector outage, and the SDK's stock exporter beside it.

An app (its own process, served by waitress) answers ``GET /work?i=N`` at a steady rate
from this script; each request ends one span ``req-N`` in two tracer providers (service
``durable``: the library's DurableSpanExporter on an OTLPExport; service ``stock``: the
SDK's OTLPSpanExporter under a BatchSpanProcessor, with the FailoverAdapter in its
session, as the guide showed before the queue existed) and one INFO log record through
the DurableLogExporter. Two OTLP/HTTP receivers (processes on 127.0.0.1) record every
post. Runs:

* ``steady``: no outage, the p99 baseline, as long as an outage run's warm-up and outage;
* ``memory``: memory queue; both receivers killed (SIGKILL) for ``--outage`` seconds,
  then restarted on their ports;
* ``disk``: disk queue; the same outage, and the app itself killed (SIGKILL) and
  restarted halfway through it.

After the receivers restart, requests go on at the same rate until the app's queue is
empty (at most ``--drain-cap`` seconds), then for 3 s more.

For each run: spans sent (requests answered 200), spans lost and duplicated per exporter,
log records lost, the drain rate after recovery (the backlog's queued batches received
per second, first post to last; a post may carry several, each one ResourceSpans or
ResourceLogs; ``posts_per_s`` beside it) and the queue's peak bytes, and the app's request p99 in three windows,
each reported on its own:

* ``p99_outage_ms``: requests started while both collectors were down (the disk run
  leaves out the 3 s after the app's restart: a cold process, its imports and first
  connections; those are ``p99_restart_ms``). Compared (``p99_outage_vs_steady``) with
  the steady run's p99 over the same seconds of its run (``p99_window_ms``): this is
  issue 25's "request p99 within 1.05x of the no-outage run": the app must not suffer
  while its collectors are down;
* ``p99_drain_ms``: requests started from the receivers' restart until the backlog was
  gone, when the senders post the backlog as fast as they can from the app's process;
  compared (``p99_drain_vs_steady``) with the same steady window;
* ``p99_ms``: every request of the run.

Prints one JSON line. Bounded: about 3 x (outage + 45) seconds.

Usage: python bench/bench_telemetry.py [--outage 60] [--rate 200] [--drain-cap 60]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import emit

PY = sys.executable
HERE = Path(__file__).resolve()
_RECORD = struct.Struct("<dI")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------- receiver process


def receiver_main(port: int, out: str) -> None:
    """An OTLP/HTTP receiver: appends (time, length, path+body) of every post to ``out``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    sink = open(out, "ab")  # noqa: SIM115 - open for the process's life

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record = self.path.encode() + b"\n" + body
            with lock:
                sink.write(_RECORD.pack(time.time(), len(record)) + record)
                sink.flush()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    Server(("127.0.0.1", port), Handler).serve_forever(poll_interval=0.05)


def read_posts(path: Path) -> list[tuple[float, str, bytes]]:
    data = path.read_bytes() if path.exists() else b""
    out, at = [], 0
    while at + _RECORD.size <= len(data):
        t, n = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        record = data[at:at + n]
        at += n
        if len(record) < n:
            break
        path_, _, body = record.partition(b"\n")
        out.append((t, path_.decode(), body))
    return out


# --------------------------------------------------------------------------- app process


def app_main(port: int, collectors: list[str], queue: str, queue_path: str) -> None:
    """The app: waitress, one span per request in each provider, one log record."""
    import logging

    import requests
    import waitress
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from resilience_mw import ServiceNode
    from resilience_mw.adapter import FailoverAdapter
    from resilience_mw.telemetry.export import DiskQueue, MemoryQueue, OTLPExport
    from resilience_mw.telemetry.export.exporters import DurableLogExporter, DurableSpanExporter

    def session() -> requests.Session:
        s = requests.Session()
        nodes = [ServiceNode(f"c{i}", url, priority=10 - i) for i, url in enumerate(collectors)]
        s.mount("http://collector/", FailoverAdapter(nodes, retry_non_idempotent=True, deadline=5.0))
        return s

    q = DiskQueue(queue_path, lease=10.0) if queue == "disk" else MemoryQueue()
    export = OTLPExport(session(), "http://collector", queue=q, timeout=(1.0, 5.0), max_backoff=1.0, consumers=4)
    durable = TracerProvider(resource=Resource.create({"service.name": "durable"}))
    durable.add_span_processor(SimpleSpanProcessor(DurableSpanExporter(export)))
    stock = TracerProvider(resource=Resource.create({"service.name": "stock"}))
    stock.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="http://collector/v1/traces",
                                                                 session=session(), timeout=5)))
    logs = LoggerProvider(resource=Resource.create({"service.name": "durable"}))
    logs.add_log_record_processor(SimpleLogRecordProcessor(DurableLogExporter(export)))
    logging.getLogger("resilience_mw").setLevel(logging.ERROR)  # (the outage's warnings: not the figures)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    logger = logging.getLogger("bench.app")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))
    tracer_d, tracer_s = durable.get_tracer("bench"), stock.get_tracer("bench")
    export.start()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/stats":
            held, batches = q.size()
            body = json.dumps({"bytes": held, "batches": batches}).encode()
        else:
            i = environ.get("QUERY_STRING", "i=0").partition("=")[2]
            with tracer_d.start_as_current_span(f"req-{i}"):
                logger.info("served %s", i)
            with tracer_s.start_as_current_span(f"req-{i}"):
                pass
            body = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def stop(*_: Any) -> None:
        durable.shutdown()
        logs.shutdown()
        stock.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


# ------------------------------------------------------------------------------ driver


def service_of(resource_spans: Any) -> str:
    for attr in resource_spans.resource.attributes:
        if attr.key == "service.name":
            return str(attr.value.string_value)
    return ""


class Proc:
    def __init__(self, *args: str) -> None:
        self.args = [PY, str(HERE), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.proc = subprocess.Popen(self.args, env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)})
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run(name: str, *, queue: str, outage: float, rate: float, restart_app: bool, tmp: Path,
        length: float = 0.0, drain_cap: float = 60.0) -> dict[str, Any]:
    """One run; ``length``: seconds of requests after the warm-up when there is no outage."""
    import requests
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    ports = [free_port(), free_port()]
    outs = [tmp / f"{name}-r{i}.bin" for i in range(2)]
    receivers = [Proc("receiver", str(p), str(o)).start() for p, o in zip(ports, outs, strict=True)]
    app_port = free_port()
    app_args = ("app", str(app_port), ",".join(f"http://127.0.0.1:{p}" for p in ports), queue, str(tmp / f"{name}.db"))
    app = Proc(*app_args).start()
    for p in [*ports, app_port]:
        wait_port(p)
    client = requests.Session()
    sent: list[int] = []
    latencies: list[tuple[float, float]] = []  # (when, seconds)
    peak = [0]
    held_batches = [0]
    cpu: list[tuple[float, int, float]] = []  # (when, app pid, its CPU seconds so far)
    stop = threading.Event()

    def stats() -> None:
        import psutil

        s = requests.Session()
        while not stop.wait(0.25):
            with contextlib.suppress(Exception):
                got = s.get(f"http://127.0.0.1:{app_port}/stats", timeout=1).json()
                peak[0] = max(peak[0], got["bytes"])
                held_batches[0] = got["batches"]
            with contextlib.suppress(Exception):
                proc = app.proc
                if proc is not None:
                    times = psutil.Process(proc.pid).cpu_times()
                    cpu.append((time.monotonic() - start, proc.pid, times.user + times.system))

    warm, tail = 5.0, 3.0
    phases = {"down": warm, "up": warm + outage, "app_kill": warm + outage / 2}
    start = time.monotonic()
    threading.Thread(target=stats, daemon=True).start()
    total = warm + (outage + drain_cap if outage else length) + tail
    i, killed_app, down, up_at = 0, False, False, None
    up_rel: float | None = None  # seconds into the run the receivers listened again
    drained_rel: float | None = None  # ... and the queue was empty after that
    while True:
        now = time.monotonic() - start
        if now >= total:
            break
        if outage and not down and now >= phases["down"]:
            for r in receivers:
                r.kill()
            down = True
        if outage and restart_app and not killed_app and now >= phases["app_kill"]:
            app.kill()  # a crash: kill -9
            app = Proc(*app_args).start()
            wait_port(app_port)
            killed_app = True
        if outage and down and up_at is None and now >= phases["up"]:
            receivers = [Proc("receiver", str(p), str(o)).start() for p, o in zip(ports, outs, strict=True)]
            for p in ports:
                wait_port(p)
            up_at = time.time()
            up_rel = time.monotonic() - start
        # drained: the queue holds no more than 50 ms of new batches
        if up_rel is not None and drained_rel is None and now > up_rel + 1 and held_batches[0] <= rate / 10:
            drained_rel = now
            total = now + tail  # the backlog is gone: a few more seconds, then stop
        t0 = time.monotonic()
        with contextlib.suppress(requests.RequestException):
            if client.get(f"http://127.0.0.1:{app_port}/work?i={i}", timeout=5).status_code == 200:
                sent.append(i)
                latencies.append((t0 - start, time.monotonic() - t0))
        i += 1
        next_at = start + i / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    # let the backlog drain (bounded), then stop everything
    last_sent = max(sent) if sent else -1

    def delivered() -> set[int]:
        got = set()
        for out in outs:
            for _, path, body in read_posts(out):
                if path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    for rs in req.resource_spans:
                        if service_of(rs) == "durable":
                            got.update(int(s.name[4:]) for ss in rs.scope_spans for s in ss.spans)
        return got

    drain_deadline = time.monotonic() + 60
    while time.monotonic() < drain_deadline and not set(sent) <= delivered():
        time.sleep(0.5)
    stop.set()
    app.kill(signal.SIGTERM)
    for r in receivers:
        r.kill(signal.SIGTERM)

    spans: dict[str, list[int]] = {"durable": [], "stock": []}
    logs: list[str] = []
    # (time, lowest seq, queued batches in it) of each durable post: a post may carry several
    # queued batches (the sender merges them), one ResourceSpans / ResourceLogs each
    durable_posts: list[tuple[float, int, int]] = []
    for out in outs:
        for t, path, body in read_posts(out):
            if path == "/v1/traces":
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                low, batches = None, 0
                for rs in req.resource_spans:
                    service = service_of(rs)
                    seqs = [int(s.name[4:]) for ss in rs.scope_spans for s in ss.spans]
                    spans.setdefault(service, []).extend(seqs)
                    if service == "durable" and seqs:
                        low, batches = min(seqs) if low is None else min(low, *seqs), batches + 1
                if low is not None:
                    durable_posts.append((t, low, batches))
            elif path == "/v1/logs":
                lreq = logs_service_pb2.ExportLogsServiceRequest()
                lreq.ParseFromString(body)
                lines = [r.body.string_value for rl in lreq.resource_logs for sl in rl.scope_logs for r in sl.log_records]
                logs.extend(lines)
                seqs = [int(x.split()[-1]) for x in lines if x.startswith("served")]
                if seqs:
                    durable_posts.append((t, min(seqs), len(lreq.resource_logs)))
    wanted = set(sent)

    def loss(seqs: list[int]) -> dict[str, Any]:
        got = [s for s in seqs if s in wanted]
        return {"lost": len(wanted - set(got)), "duplicated": len(got) - len(set(got)),
                "lost_pct": round(100 * len(wanted - set(got)) / max(1, len(wanted)), 2)}

    result: dict[str, Any] = {
        "queue": queue,
        "outage_s": outage if outage else 0,
        "app_restarted": killed_app,
        "spans_sent": len(wanted),
        "durable": loss(spans["durable"]),
        "stock": loss(spans["stock"]),
        "logs_lost": len(wanted - {int(x.split()[-1]) for x in logs if x.startswith("served")}),
        "queue_peak_bytes": peak[0],
        "last_seq": last_sent,
    }
    def p99(lo: float = 0.0, hi: float = float("inf"), skip: tuple[float, float] | None = None) -> float | None:
        lat = sorted(s for t, s in latencies if lo <= t < hi and not (skip and skip[0] <= t < skip[1]))
        return round(1000 * lat[int(0.99 * (len(lat) - 1))], 2) if lat else None

    def cpu_share(lo: float, hi: float) -> float | None:
        """The app's CPU seconds per second between ``lo`` and ``hi`` (its restart left out)."""
        used = seen = 0.0
        for (t0, pid0, c0), (t1, pid1, c1) in itertools.pairwise(cpu):
            if pid0 == pid1 and lo <= t0 and t1 <= hi:
                used, seen = used + c1 - c0, seen + t1 - t0
        return round(used / seen, 3) if seen else None

    result["p99_ms"] = p99()
    if outage:
        restart = (phases["app_kill"], phases["app_kill"] + 3) if killed_app else None
        result["p99_outage_ms"] = p99(phases["down"], up_rel or phases["up"], restart)
        result["app_cpu_outage"] = cpu_share(phases["down"], up_rel or phases["up"])
        if restart:
            result["p99_restart_ms"] = p99(*restart)
        if up_rel is not None:
            result["p99_drain_ms"] = p99(up_rel, drained_rel or float("inf"))
            result["drain_window_s"] = round((drained_rel or total) - up_rel, 1)
            result["app_cpu_drain"] = cpu_share(up_rel, drained_rel or total)
    else:
        result["p99_window_ms"] = p99(warm, warm + length)
        result["app_cpu"] = cpu_share(warm, warm + length)
    if up_at is not None:
        backlog_seq = max((s for s in sent if s < rate * (phases["up"])), default=0)
        after = sorted((t, n) for t, low, n in durable_posts if t >= up_at and low <= backlog_seq)
        if len(after) > 1:
            seconds = after[-1][0] - after[0][0]
            batches = sum(n for _, n in after)
            result["drain"] = {"backlog_batches": batches, "posts": len(after), "seconds": round(seconds, 3),
                               "batches_per_s": round((batches - after[0][1]) / max(1e-6, seconds)),
                               "posts_per_s": round((len(after) - 1) / max(1e-6, seconds))}
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        receiver_main(int(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "app":
        app_main(int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4], sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=60.0, help="seconds both collectors are down")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--drain-cap", type=float, default=60.0, help="most seconds of requests after the outage")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        steady = run("steady", queue="memory", outage=0, rate=args.rate, restart_app=False, tmp=Path(tmp),
                     length=args.outage)
        memory = run("memory", queue="memory", outage=args.outage, rate=args.rate, restart_app=False, tmp=Path(tmp),
                     drain_cap=args.drain_cap)
        disk = run("disk", queue="disk", outage=args.outage, rate=args.rate, restart_app=True, tmp=Path(tmp),
                   drain_cap=args.drain_cap)
    base = steady["p99_window_ms"]
    for r in (memory, disk):
        if base:
            for key in ("p99_outage", "p99_drain"):
                if r.get(key + "_ms"):
                    r[key + "_vs_steady"] = round(r[key + "_ms"] / base, 3)
    emit("telemetry", {"rate": args.rate, "outage_s": args.outage,
                       "runs": {"steady": steady, "memory": memory, "disk": disk}})


if __name__ == "__main__":
    main()
