"""FailoverAdapter against a plain HTTPAdapter, and failover latency to bad nodes.

* success path: kept-alive GETs to one live local node through a plain HTTPAdapter and
  through FailoverAdapter, interleaved, same run; ratio of medians;
* first call with a bad primary (refused port, connect-timeout, hung) then a live node,
  against the per-attempt timeout; a timeout must cost the timeout once;
* follow-up calls once the bad node is marked unhealthy, against plain calls made
  alternately with them;
* the same comparisons with each session in a process of its own (``isolated``): the
  same history (the bad node, then 300 calls to the live one), in ABBA order;
* the failover loop's own cost per call, in process (no I/O): ``failover_order()`` and
  one successful walk of :class:`~resilience_mw.failover.FailoverLoop`, for 3 and 1,000
  nodes, against a bare function call.

Servers are on 127.0.0.1 and stop with the script. Prints one JSON line.
Usage: python bench/bench_adapter.py [--requests 400] [--reps 7] [--pairs 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

import requests
from requests.adapters import HTTPAdapter

from bench._harness import delta, emit, interleaved, median
from resilience_mw import FailoverManager, FailoverStrategy, ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.failover import FailoverLoop
from tests.nodes import NodeServer, free_port

TIMEOUT = (0.1, 0.2)


def syn_drop_listener() -> tuple[socket.socket, list[socket.socket], int]:
    """A port whose accept queue is full: new connections time out in connect."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.05)
    return srv, fillers, port


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def abba(plain: object, ours: object, blocks: int, size: int) -> tuple[list[float], list[float]]:
    """Times of ``plain`` and ``ours`` in alternating blocks of ``size`` calls, each first
    in turn (ABBA): the same load for both, and neither always runs first."""
    a: list[float] = []
    b: list[float] = []
    for block in range(blocks):
        if block % 2:
            b += timed(ours, size)
            a += timed(plain, size)
        else:
            a += timed(plain, size)
            b += timed(ours, size)
    return a, b


def success_path(live: NodeServer, n: int) -> dict[str, float]:
    plain = requests.Session()
    plain.mount("http://", HTTPAdapter())
    fo = requests.Session()
    fo.mount("http://svc/", FailoverAdapter([ServiceNode("live", live.url)]))
    get_plain = lambda: plain.get(f"{live.url}/x", timeout=TIMEOUT)  # noqa: E731
    get_fo = lambda: fo.get("http://svc/x", timeout=TIMEOUT)  # noqa: E731
    for _ in range(50):
        get_plain()
        get_fo()
    a, b = abba(get_plain, get_fo, n // 20, 20)
    return {
        "plain_median_ms": round(statistics.median(a), 4),
        "failover_median_ms": round(statistics.median(b), 4),
        "ratio": round(statistics.median(b) / statistics.median(a), 4),
    }


def bad_then_live(bad_url: str, live: NodeServer, reps: int) -> dict[str, float]:
    firsts, follow, plain_times, ratios = [], [], [], []
    for _ in range(reps):
        # The baseline is a plain session that met the bad node too: the same history
        # as the adapter's session.
        plain = requests.Session()
        plain.mount("http://", HTTPAdapter())
        with contextlib.suppress(requests.RequestException):
            plain.get(f"{bad_url}/x", timeout=TIMEOUT)
        plain.get(f"{live.url}/x", timeout=TIMEOUT)
        s = requests.Session()
        s.mount(
            "http://svc/",
            FailoverAdapter(
                [ServiceNode("bad", bad_url, priority=10), ServiceNode("live", live.url, priority=5)],
                failure_threshold=1,
            ),
        )
        t0 = time.perf_counter()
        r = s.get("http://svc/x", timeout=TIMEOUT)
        firsts.append((time.perf_counter() - t0) * 1000)
        assert r.json()["node"] == "live"
        # neither the follow-ups nor the plain calls always run right after the timeout
        theirs, mine = abba(
            lambda plain=plain: plain.get(f"{live.url}/x", timeout=TIMEOUT),
            lambda s=s: s.get("http://svc/x", timeout=TIMEOUT),
            10,
            5,
        )
        follow += mine
        plain_times += theirs
        ratios.append(statistics.median(mine) / statistics.median(theirs))  # within the rep
    return {
        "first_call_median_ms": round(statistics.median(firsts), 3),
        "first_call_max_ms": round(max(firsts), 3),
        "follow_up_median_ms": round(statistics.median(follow), 4),
        # the median of per-rep ratios: each compares calls made under the same load
        "follow_up_over_plain": round(statistics.median(ratios), 3),
    }


def child(kind: str, live_url: str, bad_url: str | None, calls: int) -> float:
    """In a process of its own: a plain session or the adapter meets the bad node (if
    any), then ``calls`` follow-ups to the live node; the median in ms."""
    if kind == "plain":
        session = requests.Session()
        session.mount("http://", HTTPAdapter())
        if bad_url:
            with contextlib.suppress(requests.RequestException):
                session.get(f"{bad_url}/x", timeout=TIMEOUT)
        url = f"{live_url}/x"
    else:
        nodes = [ServiceNode("live", live_url, priority=5)]
        if bad_url:
            nodes.append(ServiceNode("bad", bad_url, priority=10))
        session = requests.Session()
        session.mount("http://svc/", FailoverAdapter(nodes, failure_threshold=1))
        url = "http://svc/x"
    session.get(url, timeout=TIMEOUT)
    return statistics.median(timed(lambda: session.get(url, timeout=TIMEOUT), calls))


def isolated(live_url: str, bad_url: str | None, pairs: int, calls: int = 300) -> dict[str, float]:
    """The adapter against a plain session, each in a fresh process with the same history
    (ABBA order): in one process the two share the interpreter's warmed caches in the
    urllib3 and http.client code, and the in-process figures move with the order."""
    times: dict[str, list[float]] = {"plain": [], "adapter": []}
    for pair in range(pairs):
        for kind in ("adapter", "plain") if pair % 2 else ("plain", "adapter"):
            argv = [sys.executable, __file__, "--child", kind, live_url, bad_url or ""]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
            times[kind].append(float(done.stdout.strip()))
    plain, adapter = statistics.median(times["plain"]), statistics.median(times["adapter"])
    return {"plain_median_ms": round(plain, 4), "adapter_median_ms": round(adapter, 4), "ratio": round(adapter / plain, 3)}


def loop_cost(repeats: int = 7) -> dict[str, float]:
    """ns per call of the failover loop's bookkeeping (no I/O), over a bare call."""

    def bare() -> None:
        pass

    out: dict[str, float] = {}
    for n in (3, 1000):
        for strategy in (FailoverStrategy.Priority, FailoverStrategy.RoundRobin):
            pool = FailoverManager(
                [ServiceNode(f"n{i}", f"http://10.0.{i // 250}.{i % 250}") for i in range(n)], strategy
            )

            def walk(pool: FailoverManager = pool) -> None:
                loop = FailoverLoop(pool, pool.call_order())  # type: ignore[arg-type]
                for step in loop:
                    loop.succeeded(step)
                    return

            results = interleaved(
                {"bare": (bare, 1), "order": (pool.failover_order, 1), "walk": (walk, 1)}, repeats, 0.05
            )
            key = f"{strategy.name.lower()}_{n}"
            out[f"failover_order_{key}_ns"] = round(delta(results, "order", "bare"), 1)
            # a call that succeeds on its first node: the path of nearly every request
            out[f"loop_call_{key}_ns"] = round(delta(results, "walk", "bare"), 1)
            out["bare_call_ns"] = round(median(results["bare"]), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--pairs", type=int, default=4, help="process pairs per case for the isolated figures")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "LIVE", "BAD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, live_url, bad_url = args.child
        print(child(kind, live_url, bad_url or None, 300))
        return
    live = NodeServer("live").start()
    hung = NodeServer("hung").start()
    hung.mode = "hang"
    srv, fillers, drop_port = syn_drop_listener()
    try:
        success = success_path(live, args.requests)
        refused = bad_then_live(f"http://127.0.0.1:{free_port()}", live, max(args.reps, 20))
        connect_timeout = bad_then_live(f"http://127.0.0.1:{drop_port}", live, args.reps)
        read_timeout = bad_then_live(hung.url, live, args.reps)
        separate = {
            "success_path": isolated(live.url, None, args.pairs),
            "refused": isolated(live.url, f"http://127.0.0.1:{free_port()}", args.pairs),
            "connect_timeout": isolated(live.url, f"http://127.0.0.1:{drop_port}", args.pairs),
            "hung": isolated(live.url, hung.url, args.pairs),
        }
    finally:
        live.stop()
        hung.stop()
        for c in fillers:
            c.close()
        srv.close()
    base = success["plain_median_ms"]
    emit(
        "adapter",
        {
            "timeout": TIMEOUT,
            "success_path": success,
            "refused_then_live": {**refused, "added_ms": round(refused["first_call_median_ms"] - base, 3)},
            "connect_timeout_then_live": connect_timeout,
            "hung_then_live": read_timeout,
            "failover_loop": loop_cost(),
            "follow_up_over_plain": {
                "refused": refused["follow_up_over_plain"],
                "connect_timeout": connect_timeout["follow_up_over_plain"],
                "hung": read_timeout["follow_up_over_plain"],
            },
            # each session in a process of its own: success path and follow-ups
            "isolated_over_plain": {case: fig["ratio"] for case, fig in separate.items()},
            "isolated": separate,
            "goals": {
                "success_ratio_max": 1.05,
                "refused_added_ms_max": 2.0,
                "connect_timeout_first_ms_max": 100 + 5,
                "hung_first_ms_max": 200 + 5,
                "follow_up_over_plain_max": 1.10,
                "isolated_over_plain_max": 1.10,  # follow-ups; the success path: success_ratio_max
            },
        },
    )


if __name__ == "__main__":
    main()
