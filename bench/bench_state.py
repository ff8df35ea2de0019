"""Shared state: what a request pays for it, and how fast an override spreads.

* ``per_request``: a Flask app with the Resilience extension called directly (WSGI, no
  server), its sampler and state sync running, with no store (``local``, the baseline
  of the same run), a SQLite file and a real redis-server. The hot path never touches
  the store: the ratio to ``local`` should stay within 2 %.
* ``propagation``: two workers (two syncs with their own threads, ``sync_interval``
  1 s); one forces a level through the store at a random moment, the time until the
  other applies it, 20 tries per store (median and max).

Needs ``redis-server`` (scripts/system-deps). Prints one JSON line.
Usage: python bench/bench_state.py [--repeats 7] [--tries 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask
from werkzeug.test import EnvironBuilder

from bench._harness import emit, interleaved, median, ratio
from resilience_mw import AutoDegradationManager
from resilience_mw.config import StateConfig
from resilience_mw.flask_ext import Resilience
from resilience_mw.fleet.stores import open_store
from resilience_mw.fleet.sync import StateSync
from resilience_mw.testing import stop_all_workers
from tests.redis_server import RedisServer

ENV = EnvironBuilder(path="/").get_environ()


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def app_with(url: str | None) -> Any:
    app = Flask(f"bench-{url}")
    Resilience(app, start="eager", state_url=url, nodes=[{"id": "a", "endpoint": "http://127.0.0.1:9"}],
               health_check=False)
    app.add_url_rule("/", "index", lambda: "ok")

    def call() -> None:
        for _ in app(dict(ENV), start_response):
            pass

    call()
    return app, call


def propagation(url: str, tries: int) -> dict[str, float]:
    a = StateSync(open_store(url), AutoDegradationManager(), config=StateConfig(url=url), name="a")
    b = StateSync(open_store(url), AutoDegradationManager(), config=StateConfig(url=url), name="b")
    a.start()
    b.start()
    times = []
    try:
        for i in range(tries):
            level = "Level3" if i % 2 == 0 else "Level1"
            time.sleep(random.random())  # an operator acts at any point of the sync cycle
            t0 = time.monotonic()
            a.force(level)
            deadline = t0 + 10
            while b.degradation.current_level().name != level and time.monotonic() < deadline:
                time.sleep(0.002)
            times.append(time.monotonic() - t0)
    finally:
        a.stop()
        b.stop()
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "tries": tries}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--target-s", type=float, default=0.2)
    ap.add_argument("--tries", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            urls = {"local": None, "sqlite": f"sqlite://{tmp}/state.db", "redis": redis.url}
            apps = {name: app_with(url) for name, url in urls.items()}
            res = interleaved({name: (call, 1) for name, (_, call) in apps.items()}, args.repeats, args.target_s)
            per_request = {f"{name}_us": round(median(v) / 1000, 2) for name, v in res.items()}
            per_request["sqlite_x_local"] = round(ratio(res, "sqlite", "local"), 4)
            per_request["redis_x_local"] = round(ratio(res, "redis", "local"), 4)
            stop_all_workers()
            # two workers of one service of their own (the apps above are other services:
            # on one file or namespace they would be a collision, reported and not merged)
            spread = {
                "sqlite": propagation(f"sqlite://{tmp}/propagation.db", args.tries),
                "redis": propagation(f"{redis.url}?namespace=bench-propagation", args.tries),
            }
        finally:
            redis.stop()
    emit(
        "state",
        {
            "per_request": per_request,
            "propagation": spread,
            "goals": {"per_request_max_x_local": 1.02, "propagation_max_s": 2.0},
        },
    )


if __name__ == "__main__":
    main()
