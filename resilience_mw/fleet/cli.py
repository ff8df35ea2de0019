"""``python -m resilience_mw``: see and change a service's shared state.

Through the store every worker syncs with (``--state-url``, or ``RESILIENCE_STATE_URL``)
or through one worker's admin endpoint (``--url``, with ``--token`` or
``RESILIENCE_ADMIN_TOKEN``)::

    python -m resilience_mw --state-url sqlite:///var/run/shop/state.db force Level3 --ttl 600
    python -m resilience_mw --state-url redis://redis:6379/0 status --json
    python -m resilience_mw --url http://127.0.0.1:8000/resilience/level clear

Commands: ``status`` (the override in force, who runs the health checks, nodes reported
down), ``force LEVEL [--ttl SECONDS]``, ``clear``, ``nodes``. Exit status 0 on success,
1 when the store or the endpoint did not answer, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from .._redact import describe_error, redact_url
from ..exceptions import ConfigError
from ..model import parse_level
from .store import StateStore, StoreError
from .stores import open_store


def _through_store(store: StateStore, args: argparse.Namespace) -> dict[str, Any]:
    now = store.now()
    if args.command == "force":
        ov = store.set_override(args.level, args.ttl, "cli")
        return {"scope": store.scope, "forced": ov.level, "ttl": args.ttl, "version": ov.version}
    if args.command == "clear":
        ov = store.set_override(None, None, "cli")
        return {"scope": store.scope, "forced": None, "version": ov.version}
    reports = [
        {"node": r.node_id, "reporter": r.reporter, "reason": r.reason, "expires_in": round(r.expires_at - now, 1)}
        for r in store.reports()
    ]
    if args.command == "nodes":
        return {"scope": store.scope, "reports": reports}
    current = store.override()
    return {
        "scope": store.scope,
        "store": repr(store),
        "forced": None if current is None else current.level,
        "forced_by": None if current is None or current.level is None else current.actor,
        "expires_in": None if current is None or current.expires_at is None else round(current.expires_at - now, 1),
        "health_checks_by": store.holder("health"),
        "reports": reports,
    }


def _through_endpoint(url: str, token: str | None, args: argparse.Namespace) -> dict[str, Any]:
    method, body = "GET", None
    if args.command == "force":
        method, body = "PUT", json.dumps({"level": args.level, "ttl": args.ttl}).encode()
    elif args.command == "clear":
        method = "DELETE"
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        doc: dict[str, Any] = json.load(resp)
    if args.command == "nodes":
        return {"scope": doc.get("scope", "process"), "nodes": doc.get("nodes", [])}
    return doc


def _text(doc: dict[str, Any]) -> str:
    lines = []
    for key, value in doc.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  {json.dumps(item, sort_keys=True)}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resilience_mw", description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--state-url", default=os.environ.get("RESILIENCE_STATE_URL"), help="the shared store")
    where.add_argument("--url", help="one worker's admin endpoint (.../resilience/level)")
    ap.add_argument("--token", default=os.environ.get("RESILIENCE_ADMIN_TOKEN"), help="the admin endpoint's token")
    ap.add_argument("--json", action="store_true", help="print JSON")
    # --json after the command too (`... status --json`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="the override, the nodes reported down")
    force = sub.add_parser("force", parents=[common], help="force a level in every worker")
    force.add_argument("level")
    force.add_argument("--ttl", type=float, default=None, help="seconds until it lapses (default: until cleared)")
    sub.add_parser("clear", parents=[common], help="clear the override in every worker")
    sub.add_parser("nodes", parents=[common], help="nodes reported down, by whom, until when")
    args = ap.parse_args(argv)
    try:
        if args.command == "force":
            args.level = parse_level(args.level).name
        if args.url:
            doc = _through_endpoint(args.url, args.token, args)
        elif args.state_url:
            store = open_store(args.state_url, field="--state-url")
            try:
                doc = _through_store(store, args)
            finally:
                store.close()
        else:
            ap.error("give --state-url (or RESILIENCE_STATE_URL) or --url")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except (StoreError, urllib.error.URLError, OSError) as exc:
        target = redact_url(args.url or args.state_url or "")
        sys.stderr.write(f"error: {target} did not answer: {describe_error(exc)}\n")
        return 1
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n" if args.json else _text(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
