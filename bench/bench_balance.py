"""Balancing across sick nodes: every strategy of the requests adapter against a textbook
load-aware picker measured in the same run, on real upstream processes (issue 24).

Five upstream processes on 127.0.0.1 (bench/balance_upstream.py: a threaded HTTP server,
5 ms of service time, one slot each, the rest queue: 200 requests per second per node, 1,000
for the cluster). Node ``n0`` is the sick one, and the first declared (so ties in
``Priority`` and ``FastestResponse`` fall on it). Scenarios:

- ``all_healthy``;
- ``slow10x``: n0 serves in 50 ms (without ``--quick`` for at least 30 s, with the
  reference, LeastLoaded and RoundRobin only: outlier detection compares every 5 s);
- ``half_capacity``: n0 serves in 10 ms (half its capacity; with one slot per node, halving
  the slots is not possible, so the service time doubles);
- ``fast500``: every 5th request n0 gets is answered ``500`` at once, without a slot (20 %
  of its requests, never two in a row);
- ``stall``: n0 stalls 1 s every 5 s (from 2 s into each period: a request arriving during
  a stall waits for its end); the scenario runs at least 10 s, so it holds two stalls;
- ``ramp``: n0's service time climbs from 5 to 200 ms over the run;
- ``sick_removed``: n1-n4 only, the comparison for ``slow10x`` (same offered load in the open
  loop).

Loops: ``closed``, ``--threads`` (16) client threads each sending its next request when
the last is answered; ``open``, Poisson arrivals (seeded) at ``--load`` (0.7) of the
scenario's nominal capacity (the four healthy nodes plus n0's average capacity:
slow10x 574/s, half 630/s, fast500 700/s, stall 672/s, ramp 573/s, all_healthy 700/s),
served by a bounded pool of ``--open-threads`` (32) threads; a request's latency runs from
its scheduled arrival, so a client that falls behind is measured as latency, not hidden.
Arrivals not started ``--drain`` (1 s) after the last one count as errors, with
their wait so far as latency (a lower bound).

Clients: a ``requests.Session`` per thread, all mounting one ``FailoverAdapter(nodes,
strategy=...)`` on ``http://svc/`` (``pool_maxsize`` 64, ``timeout=2`` per request, nodes
with equal priority and weight, the library's defaults otherwise) for each strategy
(``Priority``, ``RoundRobin``, ``WeightedRoundRobin``, ``Random``, ``FastestResponse``,
``LeastLoaded``); and ``reference``: plain sessions on one ``HTTPAdapter`` with a picker of
this file's own, power of two choices over a peak-sensitive EWMA of latency (Finagle's
PeakEwma: a sample above the average replaces it, below it the average decays with a 10 s
time constant, reads included) times (in flight + 1); a node without a sample costs 0 when
idle (explored), a large penalty when busy; a failure (5xx, connection error) is recorded
as at least 250 ms. It never retries: its errors are what its balancing alone avoids.
In the stall scenario, with ``LeastLoaded``: ``LeastLoaded+hedge``
(``hedge_max_extra_load=0.05``) and ``LeastLoaded+hedge@Level1`` (the same, with a
degradation manager forced to Level1: no hedge expected); and ``RoundRobin+hedge``. The
hedging goal (p99.9 halved) is checked on ``RoundRobin``, the strategy of the issue's
stall figures: it keeps sending its share into every stall, so its tail is the stall's.
``LeastLoaded`` alone already steers away from a stalled node within milliseconds (a
request waiting counts by its age), so there is no stall in its tail to halve; its ratio
is reported as information (``info_``), with the extra load. A piece the library does
not have yet is reported ``"unavailable"``.

Reported per scenario, loop and client, medians over ``--runs`` (2) runs (each run plays
every client of a scenario and loop once, in shuffled order): ``rps`` (2xx answers completed
within the duration, per second), ``p50_ms``, ``p99_ms``, ``p999_ms`` (over every request,
failed ones included), ``errors`` and ``error_pct`` (client-visible: an exception or a
non-2xx answer), ``shares`` (each node's share of the requests the upstreams counted, hedges
and retries included), ``sick_share`` (n0's) and ``max_share``, ``hedges`` and
``extra_load`` (hedges / requests), ``client_cpu`` (cores the bench process used: near 1.0
means the Python client is the bottleneck, the GIL) and ``upstream_cpu`` (cores the five
upstreams used), and ``*_x_ref``: the ratio to the reference, computed within each run.
``goals`` checks the issue's targets on those medians. Prints one JSON line.

Usage: python bench/bench_balance.py [--quick] [--runs 2] [--duration 4]
       [--scenarios all_healthy,slow10x,...] [--strategies RoundRobin,LeastLoaded,...]
       [--loops closed,open]
Default: about 22 minutes on 2 CPUs; ``--quick`` (1 run, 1.5 s, stall 4 s: one stall):
about 3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resilience_mw
from bench._harness import emit
from resilience_mw import DegradationLevel, FailoverStrategy, ServiceNode, signals
from resilience_mw.adapter import FailoverAdapter

NODES = 5
SERVICE_MS = 5.0
#: per request: bounds the tail a run waits for (a stall, 1 s plus the queue, fits)
TIMEOUT = 2.0
POOL_MAXSIZE = 64
HEDGE_CAP = 0.05
STRATEGIES = ["Priority", "RoundRobin", "WeightedRoundRobin", "Random", "FastestResponse", "LeastLoaded"]
HEDGED = ["LeastLoaded+hedge", "LeastLoaded+hedge@Level1", "RoundRobin+hedge"]
SCENARIOS = ["all_healthy", "slow10x", "half_capacity", "fast500", "stall", "ramp", "sick_removed"]
#: the clients ``sick_removed`` runs (it only serves as the comparison for slow10x)
REMOVED_CLIENTS = ["LeastLoaded", "reference"]
#: slow10x and sick_removed run this long (without --quick): outlier detection compares
#: every 5 s (the library's default), and the goal is the p99 of the whole run, the first
#: interval's traffic to the sick node included
SLOW_MIN_S = 30.0
#: the clients slow10x runs at that length (the goals need LeastLoaded and the
#: reference; RoundRobin shows what outlier detection alone does)
SLOW_CLIENTS = ["reference", "LeastLoaded", "RoundRobin"]
#: the clients the stall scenario runs with ``--quick`` (the hedging goals and one contrast)
QUICK_STALL_CLIENTS = ["reference", "RoundRobin", "LeastLoaded", *HEDGED]
STALL_MIN_S = 10.0
#: seconds after the last arrival that queued arrivals may still start (later: errors)
DRAIN_S = 1.0


# --- the upstreams -------------------------------------------------------------------------


class Upstreams:
    """``NODES`` upstream processes; ``configure`` resets their counters and scenario clock."""

    def __init__(self, count: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        self.control = requests.Session()
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.balance_upstream"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            self.ports.append(int(proc.stdout.readline()))
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def configure(self, configs: list[dict[str, Any]]) -> None:
        for i, cfg in enumerate(configs):
            self.control.post(f"{self.url(i)}/_config", data=json.dumps(cfg), timeout=5).raise_for_status()

    def stats(self) -> list[dict[str, int]]:
        return [self.control.get(f"{self.url(i)}/_stats", timeout=5).json() for i in range(len(self.ports))]

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.ps)

    def close(self) -> None:
        self.control.close()
        for proc in self.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()  # the upstream exits when its stdin closes
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@dataclass(frozen=True)
class Scenario:
    name: str
    #: the sick node's settings (None: all healthy)
    sick: dict[str, Any] | None
    #: nodes the clients know (n0 left out in sick_removed)
    nodes: tuple[int, ...] = tuple(range(NODES))
    #: the sick node's average capacity, requests per second (open-loop rate)
    sick_capacity: float = 1000 / SERVICE_MS
    min_duration: float = 0.0


def scenarios(duration: float, quick: bool) -> dict[str, Scenario]:
    healthy = 1000 / SERVICE_MS
    ramp_from, ramp_to = SERVICE_MS, 200.0
    stall_duration = 3.5 if quick else STALL_MIN_S  # quick: one stall (2-3 s), else two
    stall_s = max(duration, stall_duration)
    return {
        s.name: s
        for s in [
            Scenario("all_healthy", None),
            Scenario("slow10x", {"service_ms": SERVICE_MS * 10}, sick_capacity=healthy / 10,
                     min_duration=0.0 if quick else SLOW_MIN_S),
            Scenario("half_capacity", {"service_ms": SERVICE_MS * 2}, sick_capacity=healthy / 2),
            Scenario("fast500", {"fail_every": 5}),
            Scenario(
                "stall",
                {"stall_s": 1.0, "stall_every_s": 5.0, "stall_at_s": 2.0},
                sick_capacity=healthy * 0.8,
                min_duration=stall_s,
            ),
            # mean of 1/s(t) for s climbing linearly from a to b: ln(b/a)/(b-a)
            Scenario(
                "ramp",
                {"ramp_to_ms": ramp_to},
                sick_capacity=1000 * math.log(ramp_to / ramp_from) / (ramp_to - ramp_from),
            ),
            # same offered load as slow10x: it is its comparison
            Scenario("sick_removed", None, nodes=tuple(range(1, NODES)), sick_capacity=healthy / 10,
                     min_duration=0.0 if quick else SLOW_MIN_S),
        ]
    }


def node_configs(scenario: Scenario, duration: float) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = [{"service_ms": SERVICE_MS, "slots": 1} for _ in range(NODES)]
    if scenario.sick:
        configs[0] = {**configs[0], **scenario.sick, "ramp_s": duration}
    return configs


def capacity(scenario: Scenario) -> float:
    healthy = 1000 / SERVICE_MS
    return healthy * (NODES - 1) + scenario.sick_capacity


# --- the reference: P2C over peak-EWMA latency x (in flight + 1) ---------------------------


class PeakEwmaP2C:
    """Finagle's PeakEwma with power of two choices, per process, one lock (never held across I/O)."""

    TAU = 10.0  # seconds: Finagle's and Linkerd's decay time
    PENALTY = 1e6  # cost of a busy node without a sample
    FAILURE_S = 0.25  # a failure counts as at least this latency

    def __init__(self, count: int, seed: int) -> None:
        self.cost = [0.0] * count  # seconds
        self.stamp = [time.monotonic()] * count
        self.inflight = [0] * count
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def _observe(self, i: int, rtt: float, now: float) -> None:
        w = math.exp(-max(now - self.stamp[i], 0.0) / self.TAU)
        self.cost[i] = rtt if rtt > self.cost[i] else self.cost[i] * w + rtt * (1 - w)
        self.stamp[i] = now

    def _load(self, i: int, now: float) -> float:
        self._observe(i, 0.0, now)  # reading decays the average (Finagle's getCost)
        if self.cost[i] == 0.0 and self.inflight[i]:
            return self.PENALTY + self.inflight[i]
        return self.cost[i] * (self.inflight[i] + 1)

    def pick(self) -> int:
        with self.lock:
            n = len(self.cost)
            a = self.rng.randrange(n)
            b = self.rng.randrange(n - 1)
            b += b >= a
            now = time.monotonic()
            i = a if self._load(a, now) <= self._load(b, now) else b
            self.inflight[i] += 1
            return i

    def done(self, i: int, rtt: float, ok: bool) -> None:
        with self.lock:
            self.inflight[i] -= 1
            self._observe(i, rtt if ok else max(rtt, self.FAILURE_S), time.monotonic())


# --- clients ---------------------------------------------------------------------------------

Call = Callable[[requests.Session], bool]


class Unavailable(Exception):
    """The library lacks what this client needs (yet)."""


_hedge_lock = threading.Lock()
_hedges_signalled = 0


def _on_hedge(sender: object, **kwargs: object) -> None:
    global _hedges_signalled
    with _hedge_lock:
        _hedges_signalled += 1


_HEDGE_SIGNAL = getattr(signals, "hedge_sent", None)
if _HEDGE_SIGNAL is not None:
    _HEDGE_SIGNAL.connect(_on_hedge, weak=False)


def level1_manager() -> Any:
    cls = getattr(resilience_mw, "DegradationManager", None) or resilience_mw.AutoDegradationManager
    manager = cls()
    manager.force_level(DegradationLevel.Level1)
    return manager


@dataclass
class Client:
    name: str
    mount: Callable[[requests.Session], None]
    call: Call
    close: Callable[[], None]
    hedges: Callable[[], int | None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)


def adapter_client(name: str, ups: Upstreams, nodes: tuple[int, ...]) -> Client:
    strategy_name, *mods = name.replace("@", "+@").split("+")
    strategy = getattr(FailoverStrategy, strategy_name, None)
    if strategy is None:
        raise Unavailable(f"FailoverStrategy.{strategy_name}")
    options: dict[str, Any] = {"pool_maxsize": POOL_MAXSIZE, "default_timeout": TIMEOUT}
    if "hedge" in mods:
        options["hedge_max_extra_load"] = HEDGE_CAP
    if "@Level1" in mods:
        options["degradation"] = level1_manager()
    service_nodes = [ServiceNode(f"n{i}", ups.url(i), priority=1, weight=1) for i in nodes]
    try:
        adapter = FailoverAdapter(service_nodes, strategy=strategy, **options)
    except (resilience_mw.ConfigError, TypeError) as e:
        raise Unavailable(
            f"FailoverAdapter({', '.join(k for k in options if k not in ('pool_maxsize', 'default_timeout'))}): {e}"
        ) from e
    signalled_before = _hedges_signalled

    def hedges() -> int | None:
        count = getattr(adapter, "hedges_sent", None)
        if isinstance(count, int):
            return count
        if _HEDGE_SIGNAL is not None:
            return _hedges_signalled - signalled_before
        return None

    def call(session: requests.Session) -> bool:
        try:
            return session.get("http://svc/work", timeout=TIMEOUT).status_code < 300
        except requests.RequestException:
            return False

    return Client(name, lambda s: s.mount("http://svc/", adapter), call, adapter.close, hedges)


def reference_client(ups: Upstreams, nodes: tuple[int, ...], seed: int) -> Client:
    picker = PeakEwmaP2C(len(nodes), seed)
    urls = [f"{ups.url(i)}/work" for i in nodes]
    http = HTTPAdapter(pool_connections=NODES, pool_maxsize=POOL_MAXSIZE, max_retries=0)

    def call(session: requests.Session) -> bool:
        i = picker.pick()
        t0 = time.perf_counter()
        ok = False
        try:
            ok = session.get(urls[i], timeout=TIMEOUT).status_code < 300
        except requests.RequestException:
            pass
        finally:
            picker.done(i, time.perf_counter() - t0, ok)
        return ok

    return Client("reference", lambda s: s.mount("http://", http), call, http.close, lambda: 0)


# --- loops -----------------------------------------------------------------------------------

Record = tuple[float, float, bool]  # (latency s, completed at, ok)


def closed_loop(client: Client, threads: int, duration: float) -> tuple[list[Record], float, float]:
    records: list[list[Record]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    start = [0.0]

    def work(out: list[Record]) -> None:
        with requests.Session() as session:
            client.mount(session)
            barrier.wait()
            stop = start[0] + duration
            while (t0 := time.perf_counter()) < stop:
                ok = client.call(session)
                t1 = time.perf_counter()
                out.append((t1 - t0, t1, ok))

    ts = [threading.Thread(target=work, args=(records[i],), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in ts:
        t.join(duration + TIMEOUT + 1)
    return [r for rs in records for r in rs], start[0], start[0] + duration


def open_loop(
    client: Client, threads: int, duration: float, rate: float, seed: int, *, drain: float = DRAIN_S
) -> tuple[list[Record], float, float, float]:
    """Poisson arrivals at ``rate`` for ``duration``, the queued ones started until ``drain``
    seconds after; returns the records, the start, the end
    of the arrivals and the dispatcher's p99 lag behind the schedule (s)."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    at = rng.expovariate(rate)
    while at < duration:
        arrivals.append(at)
        at += rng.expovariate(rate)
    q: queue.SimpleQueue[float | None] = queue.SimpleQueue()
    records: list[list[Record]] = [[] for _ in range(threads)]
    drain_until = [math.inf]

    def work(out: list[Record]) -> None:
        with requests.Session() as session:
            client.mount(session)
            while (scheduled := q.get()) is not None:
                if time.perf_counter() > drain_until[0]:
                    out.append((drain_until[0] - scheduled, drain_until[0], False))
                    continue
                ok = client.call(session)
                t1 = time.perf_counter()
                out.append((t1 - scheduled, t1, ok))

    ts = [threading.Thread(target=work, args=(records[i],), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    lags = []
    t0 = time.perf_counter() + 0.05
    for a in arrivals:
        when = t0 + a
        delay = when - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        lags.append(time.perf_counter() - when)
        q.put(when)
    drain_until[0] = t0 + duration + drain
    for _ in ts:
        q.put(None)
    for t in ts:
        t.join(drain + TIMEOUT + 1)
    lags.sort()
    return (
        [r for rs in records for r in rs],
        t0,
        t0 + duration,
        lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
    )


def pct(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_xs:
        return math.nan
    return sorted_xs[min(len(sorted_xs) - 1, max(0, math.ceil(q * len(sorted_xs)) - 1))]


# --- one configuration -----------------------------------------------------------------------


def make_client(name: str, ups: Upstreams, scenario: Scenario, seed: int) -> Client:
    if name == "reference":
        return reference_client(ups, scenario.nodes, seed)
    return adapter_client(name, ups, scenario.nodes)


def measure(
    ups: Upstreams, scenario: Scenario, loop: str, client_name: str, *, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    duration = max(args.duration, scenario.min_duration)
    client = make_client(client_name, ups, scenario, seed)
    try:
        ups.configure(node_configs(scenario, duration))
        cpu0, up0, wall0 = time.process_time(), ups.cpu(), time.perf_counter()
        lag = None
        if loop == "closed":
            records, start, end = closed_loop(client, args.threads, duration)
        else:
            rate = args.load * capacity(scenario)
            records, start, end, lag = open_loop(
                client, args.open_threads, duration, rate, seed, drain=args.drain
            )
        wall = time.perf_counter() - wall0
        cpu, up = time.process_time() - cpu0, ups.cpu() - up0
        hedges = client.hedges()
        counts = [s["served"] for s in ups.stats()]
    finally:
        client.close()
    lat = sorted(r[0] for r in records)
    errors = sum(not r[2] for r in records)
    ok_in_time = (
        sum(r[2] and r[1] <= end for r in records) if loop == "closed" else sum(r[2] for r in records)
    )
    total = sum(counts) or 1
    out: dict[str, Any] = {
        "requests": len(records),
        "rps": ok_in_time / (end - start),
        "p50_ms": pct(lat, 0.50) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "p999_ms": pct(lat, 0.999) * 1000,
        "errors": errors,
        "error_pct": 100 * errors / max(len(records), 1),
        "shares": [c / total for c in counts],
        "max_share": max(counts) / total,
        "sick_share": counts[0] / total,
        "hedges": hedges,
        "extra_load": None if hedges is None else hedges / max(len(records), 1),
        "client_cpu": cpu / wall,
        "upstream_cpu": up / wall,
    }
    if lag is not None:
        out["offered_rps"] = args.load * capacity(scenario)
        out["dispatch_lag_p99_ms"] = lag * 1000
    return out


# --- aggregation and goals -------------------------------------------------------------------

RATIO_KEYS = {"rps": "rps_x_ref", "p99_ms": "p99_x_ref", "p999_ms": "p999_x_ref"}


def med(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None
    if isinstance(xs[0], list):
        return [med(list(col)) for col in zip(*xs, strict=True)]
    return statistics.median(xs)


def rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 3) if abs(x) < 100 else round(x, 1)
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of one client; ratios to the reference within each run first."""
    keys = [k for k in runs[0] if k != "ref"]
    out = {k: rounded(med([r[k] for r in runs])) for k in keys}
    for k, name in RATIO_KEYS.items():
        ratios = [r[k] / r["ref"][k] for r in runs if r.get("ref") and r["ref"][k]]
        out[name] = rounded(med(ratios)) if ratios else None
    out["runs"] = len(runs)
    return out


def goal(value: float | None, op: str, target: float, why: str = "") -> dict[str, Any]:
    if value is None:
        return {
            "value": "unavailable",
            "target": f"{op} {target:g}",
            "pass": None,
            **({"note": why} if why else {}),
        }
    ok = value <= target if op == "<=" else value >= target
    return {
        "value": rounded(value),
        "target": f"{op} {target:g}",
        "pass": ok,
        **({"note": why} if why else {}),
    }


def goals(raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]], loops: list[str]) -> dict[str, Any]:
    def runs(scenario: str, loop: str, client: str) -> list[dict[str, Any]]:
        return raw.get(scenario, {}).get(loop, {}).get(client, [])

    def per_run_ratio(
        a: list[dict[str, Any]], b: list[dict[str, Any]], key: str, key_b: str | None = None
    ) -> float | None:
        pairs = [
            (x[key], y[key_b or key])
            for x, y in zip(a, b, strict=False)
            if x[key] is not None and y[key_b or key]
        ]
        return float(med([x / y for x, y in pairs])) if pairs else None

    def value(scenario: str, loop: str, client: str, key: str) -> float | None:
        v = med([r[key] for r in runs(scenario, loop, client)])
        return None if v is None else float(v)

    out: dict[str, Any] = {}
    for loop in loops:
        ll = "LeastLoaded"
        out[f"slow10x_{loop}_LeastLoaded_p99_over_sick_removed"] = goal(
            per_run_ratio(runs("slow10x", loop, ll), runs("sick_removed", loop, ll), "p99_ms"), "<=", 1.2
        )
        out[f"slow10x_{loop}_LeastLoaded_rps_over_reference"] = goal(
            per_run_ratio(runs("slow10x", loop, ll), runs("slow10x", loop, "reference"), "rps"), ">=", 0.95
        )
        out[f"ramp_{loop}_LeastLoaded_p99_over_reference"] = goal(
            per_run_ratio(runs("ramp", loop, ll), runs("ramp", loop, "reference"), "p99_ms"), "<=", 1.5
        )
        out[f"all_healthy_{loop}_FastestResponse_rps_over_RoundRobin"] = goal(
            per_run_ratio(
                runs("all_healthy", loop, "FastestResponse"), runs("all_healthy", loop, "RoundRobin"), "rps"
            ),
            ">=",
            0.95,
        )
        out[f"all_healthy_{loop}_FastestResponse_max_node_share"] = goal(
            value("all_healthy", loop, "FastestResponse", "max_share"), "<=", 0.30
        )
        out[f"fast500_{loop}_LeastLoaded_error_pct"] = goal(
            value("fast500", loop, ll, "error_pct"), "<=", 0.5
        )
        for strategy in (ll, "RoundRobin"):
            prefix = "" if strategy == "RoundRobin" else "info_"
            out[f"{prefix}stall_{loop}_{strategy}_hedge_p999_improvement"] = goal(
                per_run_ratio(runs("stall", loop, strategy), runs("stall", loop, f"{strategy}+hedge"), "p999_ms"),
                ">=",
                2.0,
                "p99.9 without hedging / with"
                + ("" if not prefix else "; information: LeastLoaded keeps the stall out of its tail by itself"),
            )
            out[f"stall_{loop}_{strategy}_hedge_extra_load"] = goal(
                value("stall", loop, f"{strategy}+hedge", "extra_load"),
                "<=",
                HEDGE_CAP + 0.01,
                "hedges sent / requests",
            )
        out[f"stall_{loop}_Level1_hedges"] = goal(
            value("stall", loop, "LeastLoaded+hedge@Level1", "hedges"), "<=", 0
        )
        # not goals: what the textbook picker itself reaches on the two relative targets
        out[f"info_slow10x_{loop}_reference_p99_over_sick_removed"] = goal(
            per_run_ratio(
                runs("slow10x", loop, "reference"), runs("sick_removed", loop, "reference"), "p99_ms"
            ),
            "<=",
            1.2,
            "information: the reference against itself, not a goal",
        )
    return out


# --- main ------------------------------------------------------------------------------------


def clients_for(scenario: str, wanted: list[str], quick: bool) -> list[str]:
    names = ["reference", *STRATEGIES, *(HEDGED if scenario == "stall" else [])]
    if scenario == "sick_removed":
        names = REMOVED_CLIENTS
    elif scenario == "slow10x" and not quick:
        names = SLOW_CLIENTS
    elif scenario == "stall" and quick:
        names = QUICK_STALL_CLIENTS
    return [n for n in names if n == "reference" or n in wanted]


@contextlib.contextmanager
def upstreams() -> Iterator[Upstreams]:
    ups = Upstreams(NODES)
    try:
        yield ups
    finally:
        ups.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="1 run of 1 s per configuration, stall 3.5 s (one stall)"
    )
    ap.add_argument(
        "--runs", type=int, default=None, help="runs per configuration, medians reported (default 2; quick 1)"
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per configuration (default 2.5; quick 1); stall >= 10",
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES + HEDGED), help="the reference always runs")
    ap.add_argument("--loops", default="closed,open")
    ap.add_argument("--threads", type=int, default=16, help="closed-loop client threads")
    ap.add_argument("--open-threads", type=int, default=32, help="open-loop thread pool")
    ap.add_argument(
        "--load", type=float, default=0.7, help="open-loop offered load, fraction of nominal capacity"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--drain",
        type=float,
        default=None,
        help="open loop: seconds queued arrivals may still start (1; quick 0.5)",
    )
    args = ap.parse_args()
    logging.getLogger("resilience_mw").setLevel(logging.ERROR)  # failovers and ejections are expected here
    args.runs = args.runs or (1 if args.quick else 2)
    args.drain = args.drain if args.drain is not None else (0.5 if args.quick else DRAIN_S)
    args.duration = args.duration or (1.0 if args.quick else 2.5)
    wanted = args.strategies.split(",")
    loops = args.loops.split(",")
    chosen = [s for s in args.scenarios.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS) | set(wanted) - set(STRATEGIES + HEDGED + ["reference"])
    if unknown:
        ap.error(f"unknown: {sorted(unknown)}")
    table = scenarios(args.duration, args.quick)
    began = time.monotonic()
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    unavailable: dict[str, str] = {}
    shuffle = random.Random(args.seed)
    with upstreams() as ups:
        for run in range(args.runs):
            for sname in chosen:
                scenario = table[sname]
                for loop in loops:
                    names = clients_for(sname, wanted, args.quick)
                    shuffle.shuffle(names)
                    got: dict[str, dict[str, Any]] = {}
                    for name in names:
                        if name in unavailable:
                            continue
                        try:
                            got[name] = measure(ups, scenario, loop, name, args=args, seed=args.seed + run)
                        except Unavailable as e:
                            unavailable[name] = str(e)
                            continue
                        print(
                            f"{time.monotonic() - began:6.0f}s run {run} {sname} {loop} {name}: "
                            f"{got[name]['rps']:.0f} req/s "
                            f"p99 {got[name]['p99_ms']:.1f} ms err {got[name]['error_pct']:.2f} % "
                            f"sick {got[name]['sick_share']:.2f} cpu {got[name]['client_cpu']:.2f}",
                            file=sys.stderr,
                            flush=True,
                        )
                    for name, r in got.items():
                        r["ref"] = got.get("reference")
                        raw.setdefault(sname, {}).setdefault(loop, {}).setdefault(name, []).append(r)
    results: dict[str, dict[str, dict[str, Any]]] = {
        s: {loop: {c: aggregate(rs) for c, rs in by_client.items()} for loop, by_client in by_loop.items()}
        for s, by_loop in raw.items()
    }
    for name in unavailable:
        for s in chosen:
            if name in clients_for(s, wanted, args.quick):
                for loop in loops:
                    results.setdefault(s, {}).setdefault(loop, {})[name] = "unavailable"
    gs = goals(raw, loops)
    emit(
        "balance",
        {
            "settings": {
                "nodes": NODES,
                "service_ms": SERVICE_MS,
                "slots": 1,
                "sick_node": "n0",
                "runs": args.runs,
                "duration_s": args.duration,
                "stall_duration_s": table["stall"].min_duration,
                "closed_threads": args.threads,
                "open_threads": args.open_threads,
                "open_load": args.load,
                "open_rps": {s: round(args.load * capacity(table[s]), 1) for s in chosen},
                "hedge_max_extra_load": HEDGE_CAP,
                "quick": args.quick,
            },
            "results": results,
            "unavailable": unavailable,
            "goals": gs,
            "goals_met": sum(g["pass"] is True for k, g in gs.items() if not k.startswith("info_")),
            "goals_failed": sorted(k for k, g in gs.items() if g["pass"] is False and not k.startswith("info_")),
            "elapsed_s": round(time.monotonic() - began, 1),
        },
    )


if __name__ == "__main__":
    main()
