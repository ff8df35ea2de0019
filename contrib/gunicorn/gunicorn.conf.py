"""gunicorn settings for an app using resilience_mw: logs with time, level, logger and
worker pid, and Prometheus metrics in multiprocess mode.

Set PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped between runs) in the environment
that starts gunicorn, then: gunicorn -c contrib/gunicorn/gunicorn.conf.py app:app
"""

import logging.config

from resilience_mw.telemetry.metrics import mark_process_dead

# The library's records (and any other library's), one line each on stderr:
#   2026-01-31T12:00:00+0000 WARNING resilience_mw.failover.loop [12345] GET /checkout (upstream GET /pay): failover ...
# Without it they reach stderr through Python's last-resort handler: the bare message,
# with no time, level, logger or worker. resilience_mw logs INFO and up (nodes back,
# levels changing), other libraries WARNING and up. gunicorn's own loggers are not named
# here, so they keep their format and --log-level, --error-logfile and --access-logfile.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        },
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {"resilience_mw": {"level": "INFO"}},
}


def on_starting(server):  # type: ignore[no-untyped-def]
    # Applied here, in the master before it forks the workers, rather than given to
    # gunicorn as logconfig_dict: with that setting gunicorn builds an access line for
    # every request (about 14 us) even when no --access-logfile is there to write it.
    logging.config.dictConfig(LOGGING)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    # a dead worker's live gauges go; its counters stay, so totals never go back
    mark_process_dead(worker.pid)
