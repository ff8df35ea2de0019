"""Merge the bench JSON lines into bench/results/summary.json and print a Markdown table.

Usage: python bench/summarize.py bench/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in paths:
        text = Path(p).read_text().strip()
        if text:
            data = json.loads(text.splitlines()[-1])
            out[data["bench"]] = data
    return out


def rows(b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    r: list[tuple[str, str, str, str]] = []
    sel = b.get("selection")
    if sel:
        for n in ("n3", "n1000"):
            x = sel["results"][n]
            for s in ("Priority", "RoundRobin"):
                r.append(
                    (
                        f"select {s}, {n[1:]} nodes, 1 / 8 threads",
                        f"{x[f'{s}/t1_ns']:.0f} / {x[f'{s}/t8_ns']:.0f} ns",
                        f"{x[f'{s}/t1_x_floor']:.2f}x floor (floor {x['floor/t1_ns']:.0f} ns); t8/t1 {x[f'{s}_t8_over_t1']:.2f}",
                        "<= 2x floor, t8/t1 <= 1.2",
                    )
                )
            r.append(
                (
                    f"naive scan (the ported design's), {n[1:]} nodes",
                    f"{x['naive/t1_ns']:.0f} ns",
                    f"{x['naive/t1_x_floor']:.0f}x floor",
                    "baseline",
                )
            )
    deg = b.get("degradation")
    if deg:
        h = deg["hot_path"]
        r.append(
            (
                "record_request + current_level, 1 thread",
                f"{h['record_plus_level/t1_minus_bare_ns']:.0f} ns over a bare call",
                f"8 threads {h['record_plus_level_t8_over_t1']:.2f}x of 1",
                "<= 500 ns, 8t <= 1.5x",
            )
        )
        r.append(
            (
                "record_request, sampler running / not",
                f"{h['record_request_sampling/t1_minus_bare_ns']:.0f} / "
                f"{h['record_request/t1_minus_bare_ns']:.0f} ns over a bare call",
                "a running sampler keeps the window current: no clock read per success",
                "",
            )
        )
        r.append(
            (
                "one psutil sample",
                f"{deg['psutil_sample_us']:.0f} us",
                "sampled at 1 Hz by default",
                "<= 10 Hz",
            )
        )
        d = deg["health_detection"]
        r.append(
            (
                "node down -> unhealthy / back -> healthy",
                f"{d['detect_down_s']:.2f} s / {d['detect_up_s']:.2f} s",
                f"interval {d['interval_s']} s x {d['threshold']} + timeout {d['timeout_s']} s",
                f"<= {d['bound_s']:.2f} s",
            )
        )
    w = b.get("wsgi")
    if w:
        x, dco = w["wsgi"], w["decorators"]
        r.append(
            (
                "middleware, gate only (bare app)",
                f"+{x['bare+gate_delta_ns']:.0f} ns",
                f"pass-through layer +{x['bare+passthrough_delta_ns']:.0f} ns",
                "<= 250 ns",
            )
        )
        r.append(
            (
                "middleware with outcome accounting (bare app)",
                f"+{x['bare+middleware_delta_ns']:.0f} ns",
                "",
                "<= 500 ns",
            )
        )
        r.append(
            (
                "middleware with outcome accounting (lazy body)",
                f"+{x['lazy+middleware_delta_ns']:.0f} ns",
                f"pass-through layer +{x['lazy+passthrough_delta_ns']:.0f} ns",
                "",
            )
        )
        r.append(
            (
                "middleware on a Flask app",
                f"+{x['flask+resilience_delta_ns']:.0f} ns",
                f"{x['flask+resilience_ratio']:.3f}x Flask (pass-through {x['flask+passthrough_ratio']:.3f}x)",
                "",
            )
        )
        for k in ("feature", "with_fallback"):
            r.append(
                (
                    f"@{k} decorator",
                    f"+{dco[f'{k}_delta_ns']:.0f} ns",
                    f"functools.wraps closure +{dco['wraps_closure_delta_ns']:.0f} ns",
                    "<= 250 ns",
                )
            )
    a = b.get("adapter")
    if a:
        r.append(
            (
                "FailoverAdapter success path",
                f"{a['success_path']['failover_median_ms']:.3f} ms",
                f"{a['success_path']['ratio']:.3f}x plain HTTPAdapter ({a['success_path']['plain_median_ms']:.3f} ms)",
                "<= 1.05x",
            )
        )
        r.append(
            (
                "refused node -> live, first call",
                f"{a['refused_then_live']['first_call_median_ms']:.2f} ms",
                f"+{a['refused_then_live']['added_ms']:.2f} ms over plain",
                "< +2 ms",
            )
        )
        r.append(
            (
                "connect-timeout node -> live (timeout 0.1 s)",
                f"{a['connect_timeout_then_live']['first_call_median_ms']:.1f} ms",
                "timeout paid once",
                "<= 105 ms",
            )
        )
        r.append(
            (
                "hung node -> live (read timeout 0.2 s)",
                f"{a['hung_then_live']['first_call_median_ms']:.1f} ms",
                "timeout paid once",
                "<= 205 ms",
            )
        )
        f = a["follow_up_over_plain"]
        r.append(
            (
                "after the bad node is marked unhealthy, both sessions in one process",
                f"{f['refused']:.2f} / {f['connect_timeout']:.2f} / {f['hung']:.2f}x plain",
                "refused / connect-timeout / hung",
                "reported (see docs/benchmarks.rst)",
            )
        )
        i = a["isolated_over_plain"]
        r.append(
            (
                "after the bad node is marked unhealthy, each session in its own process",
                f"{i['refused']:.2f} / {i['connect_timeout']:.2f} / {i['hung']:.2f}x plain",
                f"refused / connect-timeout / hung; success path {i['success_path']:.2f}x",
                "<= 1.10x",
            )
        )
    ov = b.get("overload")
    if ov:
        res = ov["results"]
        for factor in (2, 4):
            n, c, full = res.get(f"none_{factor}x"), res.get(f"cpu_{factor}x"), res.get(f"full_{factor}x")
            if full:
                r.append(
                    (
                        f"overload {factor}x C: goodput / critical success / admitted p99 (queue + criticality)",
                        f"{full['goodput_of_capacity']:.2f} C / {full['critical_success']:.1%} / "
                        f"{full['admitted_p99_over_unloaded']:.2f}x",
                        (f"no library {n['goodput_of_capacity']:.2f} C; " if n else "")
                        + (f"CPU levels {c['goodput_of_capacity']:.2f} C" if c else ""),
                        ">= 0.9 C (2x) / 0.8 C (4x), >= 99 %, <= 2x",
                    )
                )
            proxies = [k.removesuffix(f"_{factor}x") for k in res if k.startswith("haproxy") and k.endswith(f"_{factor}x")]
            for name in sorted(proxies, key=lambda n: int(n.removeprefix("haproxy"))):
                h = res[f"{name}_{factor}x"]
                p99 = h["admitted_p99_over_unloaded"]
                r.append(
                    (
                        f"overload {factor}x C: HAProxy in front, timeout queue {name.removeprefix('haproxy')} ms",
                        f"{h['goodput_of_capacity']:.2f} C / {h['critical_success']:.1%} / "
                        + (f"{p99:.2f}x" if p99 is not None else "-"),
                        (f"{h['goodput_over_full']:.2f}x the library's goodput; " if h.get("goodput_over_full") else "")
                        + f"HAProxy CPU {h['proxy_cpu_us_per_request']:.0f} us per request, on another CPU",
                        "reported",
                    )
                )
        recovered = {k.removesuffix("_recovery"): x for k, x in res.items() if k.endswith("_recovery")}
        if recovered:
            times = [
                f"{name} {x['recovery_s']:.1f} s" if x["recovery_s"] is not None
                else f"{name} not within {ov['recovery_seconds']:g} s"
                for name, x in recovered.items()
            ]
            spreads = [
                f"{name} {x['min']:g}-{x['max']:g} s ({x['distinct']} values)" if "min" in x else f"{name} none"
                for name, x in ((k.removesuffix("_retry_after"), x) for k, x in res.items() if k.endswith("_retry_after"))
            ]
            r.append(
                (
                    f"overload: {ov['overload_seconds']:g} s at 4x C, then 0.5x C: time until 99 % are served",
                    " / ".join(times),
                    "Retry-After " + "; ".join(spreads),
                    "<= 2 s (library)",
                )
            )
        cost = res.get("refusal_cpu")
        if cost:
            r.append(
                (
                    "CPU of one refusal in the worker / in the middleware",
                    f"{cost['worker_us']:.0f} us / {cost['middleware_us']:.1f} us",
                    f"{cost['worker_over_served']:.1%} of a served request ({res['served_cpu_ms']:.2f} ms)",
                    "reported",
                )
            )
    sat = b.get("saturation")
    if sat and "skipped" not in sat:
        runs = sat["results"] if isinstance(sat["results"], list) else [sat["results"]]
        r.append(
            (
                "gunicorn, 2 sync workers at 100 % CPU, wrk -c8: Resilience (defaults) vs plain Flask",
                f"{sat['rps_ratio_resilient_over_plain']:.3f}x 2xx rps; {sat['shed_503']} x 503; "
                f"load level {sat['load_level_worst']} (end {sat['load_level_end']})",
                f"2xx rps plain {runs[0]['plain']['ok_rps']:.0f} / Resilience {runs[0]['resilient']['ok_rps']:.0f}; "
                f"{sat['seconds']:g} s each",
                ">= 0.95x, 0 x 503, Normal",
            )
        )
    hb = b.get("health")
    if hb:
        for n in ("n3", "n1000"):
            o = hb["results"]["order"][n]
            r.append(
                (
                    f"failover_order(), {n[1:]} nodes: Priority / RoundRobin",
                    f"{o['Priority_ns']:.0f} / {o['RoundRobin_ns']:.0f} ns",
                    f"{o['Priority_x_pick']:.1f}x / {o['RoundRobin_x_pick']:.1f}x a pick ({o['pick_ns']:.0f} ns); "
                    f"naive sort {o['naive_ns']:.0f} ns",
                    "",
                )
            )
        for key, label in (("round_delay0", "at once"), ("round_delay50ms", "in 50 ms")):
            x = hb["results"][key]
            r.append(
                (
                    f"health round, 1,000 nodes answering {label}, {hb['workers']} workers",
                    f"{x['checker_wall_s']:.2f} s wall, {x['checker_cpu_s']:.2f} s CPU",
                    f"{x['wall_x_floor']:.2f}x / {x['cpu_x_floor']:.2f}x plain urllib3 "
                    f"({x['floor_wall_s']:.2f} s, {x['floor_cpu_s']:.2f} s)",
                    "0 false downs",
                )
            )
    st = b.get("state")
    if st:
        p = st["per_request"]
        r.append(
            (
                "Flask request with a shared store: SQLite / Redis",
                f"{p['sqlite_x_local']:.3f}x / {p['redis_x_local']:.3f}x",
                f"no store {p['local_us']:.1f} us per request (sync running)",
                "<= 1.02x",
            )
        )
        for name in ("sqlite", "redis"):
            x = st["propagation"][name]
            r.append(
                (
                    f"forced level reaches another worker ({name})",
                    f"median {x['median_s']:.2f} s, max {x['max_s']:.2f} s",
                    f"{x['tries']} tries, sync every 1 s",
                    "<= 1 sync interval",
                )
            )
    mt = b.get("metrics")
    if mt:
        w, g, sc, sm = (mt["results"][k] for k in ("wsgi", "gunicorn", "scrape", "sampler"))
        r.append(
            (
                "request under gunicorn, metrics on / off: Prometheus / OTel / both",
                f"{g['on_over_off_rps']:.3f}x / {g['otel_over_off_rps']:.3f}x / {g['both_over_off_rps']:.3f}x rps",
                f"off {g['off_rps']:.0f} rps, 2 workers, a Python client",
                ">= 0.98x",
            )
        )
        r.append(
            (
                "Flask request in-process: Prometheus / OTel / both",
                f"{w['prometheus_x_off']:.3f}x / {w['otel_x_off']:.3f}x / {w['both_x_off']:.3f}x",
                f"off {w['off_us']:.1f} us per request",
                "reported",
            )
        )
        r.append(
            (
                "one /metrics scrape, 8 workers x 100 nodes",
                f"median {sc['median_ms']:.0f} ms, max {sc['max_ms']:.0f} ms",
                f"{sc['node_state_series']} node-state series, {sc['files']} files",
                "< 50 ms",
            )
        )
        r.append(
            (
                "LevelSampler per span / DetailedLogsFilter per record",
                f"{sm['level_sampler_ns']:.0f} ns / {sm['log_filter_ns']:.0f} ns",
                f"{sm['level_x_ratio']:.2f}x TraceIdRatioBased ({sm['ratio_sampler_ns']:.0f} ns)",
                "reported",
            )
        )
    for key in ("throughput", "throughput_waitress"):
        t = b.get(key)
        if t and "skipped" not in t:
            server = t["server"].split(";")[0]
            cpu = t["worker_cpu_us_per_request"]
            r.append(
                (
                    f"{server}, wrk -c8: Resilience vs plain Flask",
                    f"{t['ratio_resilient_over_plain']:.3f}x",
                    f"rps {t['rps_median']['plain']:.0f} / {t['rps_median']['resilient']:.0f}; "
                    f"CPU per request {t['cpu_per_request_resilient_over_plain']:.3f}x "
                    f"({cpu['plain']:.0f} / {cpu['resilient']:.0f} us); "
                    f"gate only {t['ratio_gate_only_over_plain']:.3f}x, "
                    f"pass-through {t['ratio_passthrough_over_plain']:.3f}x",
                    ">= 0.98x",
                )
            )
    return r


def main() -> None:
    b = load(sys.argv[1:])
    out_dir = Path(sys.argv[1]).parent if len(sys.argv) > 1 else Path("bench/results")
    (out_dir / "summary.json").write_text(json.dumps(b, indent=2, sort_keys=True))
    m = next(iter(b.values()))["machine"] if b else {}
    print(
        f"Machine: {m.get('cpus')} CPUs, {m.get('processor')}, {m.get('platform')}, Python {m.get('python')}\n"
    )
    # an reStructuredText list-table, for docs/benchmarks.rst
    print(".. list-table::\n   :header-rows: 1\n")
    for row in [["measure", "result", "same-run reference", "goal"], *rows(b)]:
        cells = [c.replace("*", "\\*") or " " for c in row]
        print(f"   * - {cells[0]}")
        for c in cells[1:]:
            print(f"     - {c}")


if __name__ == "__main__":
    main()
