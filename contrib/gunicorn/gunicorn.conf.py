"""gunicorn settings for an app using resilience_mw's Prometheus metrics in multiprocess
mode. Set PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped between runs) in the
environment that starts gunicorn, then: gunicorn -c contrib/gunicorn/gunicorn.conf.py app:app
"""

from resilience_mw.telemetry.metrics import mark_process_dead


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    # a dead worker's live gauges go; its counters stay, so totals never go back
    mark_process_dead(worker.pid)
