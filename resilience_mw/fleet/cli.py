"""``python -m resilience_mw``: see and change a service's shared state.

Through the store every worker syncs with (``--state-url``, or ``RESILIENCE_STATE_URL``)
or through one worker's admin endpoint (``--url``, with ``RESILIENCE_ADMIN_TOKEN`` or
``--token``)::

    python -m resilience_mw --state-url sqlite:///var/run/shop/state.db force Level3 --ttl 600
    python -m resilience_mw --state-url redis://redis:6379/0 status --json
    RESILIENCE_ADMIN_TOKEN=... python -m resilience_mw --url http://127.0.0.1:8000/resilience/level clear

Commands: ``status`` (the override in force, who runs the health checks, nodes reported
down), ``force LEVEL [--ttl SECONDS]`` (a level name in any case), ``clear``, ``nodes``.
Answers print as ``key: value`` lines (nested values as ``cause.forced: Level3``), or
as JSON with ``--json``. Exit status 0 on success, 1 when the store or the endpoint did
not answer (or answered a redirect, which is never followed: the token would go with
it), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any

from .._redact import describe_error, redact_store_url, redact_text, redact_url
from ..config import StateConfig
from ..exceptions import ConfigError
from ..model import parse_level
from .store import StateStore, StoreError
from .stores import open_store

#: what ``--help`` shows (plain text: the module docstring is reST for the reference)
_DESCRIPTION = """\
See and change a service's shared state: through the store every worker syncs with
(--state-url, or RESILIENCE_STATE_URL), or through one worker's admin endpoint (--url,
with the token in RESILIENCE_ADMIN_TOKEN)."""

_EPILOG = """\
examples:
  python -m resilience_mw --state-url sqlite:///var/run/shop/state.db force level3 --ttl 600
  python -m resilience_mw --state-url redis://redis:6379/0 status --json
  RESILIENCE_ADMIN_TOKEN=... python -m resilience_mw --url http://127.0.0.1:8000/resilience/level clear

Level names are taken in any case (Normal, Level1 .. Level3, Emergency). A redirect from
--url is never followed (the token would go with it). Exit status: 0 done, 1 the store
or the endpoint did not answer, 2 bad arguments."""

def _through_store(store: StateStore, url: str, args: argparse.Namespace) -> dict[str, Any]:
    now = store.now()
    if args.command in ("force", "clear"):
        ov = store.set_override(args.level if args.command == "force" else None,
                                args.ttl if args.command == "force" else None, "cli")
        # what the admin endpoint's PUT answers too: who wrote it, and by when every
        # worker syncing every --sync-interval seconds has it
        applied_by = datetime.fromtimestamp(ov.set_at + args.sync_interval, timezone.utc).isoformat()
        doc: dict[str, Any] = {"scope": store.scope, "forced": ov.level}
        if args.command == "force":
            doc["ttl"] = args.ttl
        doc.update(version=ov.version, pid=os.getpid(), applied_by=applied_by)
        return doc
    reports = [
        {"node": r.node_id, "reporter": r.reporter, "reason": r.reason, "expires_in": round(r.expires_at - now, 1)}
        for r in store.reports()
    ]
    if args.command == "nodes":
        return {"scope": store.scope, "reports": reports}
    current = store.override()
    return {
        "scope": store.scope,
        "store": redact_store_url(url),
        "forced": None if current is None else current.level,
        "forced_by": None if current is None or current.level is None else current.actor,
        "expires_in": None if current is None or current.expires_at is None else round(current.expires_at - now, 1),
        "health_checks_by": store.holder("health"),
        "reports": reports,
    }


class RedirectRefused(urllib.error.URLError):
    """The admin endpoint answered a redirect, which the CLI does not follow: the
    request carries the admin token, and a redirect may point anywhere."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"answered {status} (a redirect) to {redact_url(location, query=False) or '?'}: not followed, "
                         "so the token goes nowhere else; give --url the address it should reach")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib's handler re-sends every header, Authorization included, to whatever host
    # the Location names: refuse every redirect instead
    def redirect_request(  # noqa: PLR0917 - urllib's own signature
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        raise RedirectRefused(code, newurl)


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
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(request, timeout=5) as resp:
        doc: dict[str, Any] = json.load(resp)
    if args.command == "nodes":
        return {"scope": doc.get("scope", "process"), "nodes": doc.get("nodes", [])}
    return doc


def _plain(value: Any) -> str:
    """One value as text: ``none`` for ``None``, ``true``/``false``, numbers and strings
    as they are."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lines(key: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        if not value:
            return [f"{key}: none"]
        return [line for k, v in value.items() for line in _lines(f"{key}.{k}", v)]
    if isinstance(value, list):
        if not value:
            return [f"{key}: none"]
        lines = [f"{key}:"]
        for item in value:
            if isinstance(item, dict):
                lines.append("  - " + ", ".join(f"{k}: {_plain(v)}" for k, v in item.items()))
            else:
                lines.append(f"  - {_plain(item)}")
        return lines
    return [f"{key}: {_plain(value)}"]


def _text(doc: dict[str, Any]) -> str:
    """``doc`` as ``key: value`` lines: nested mappings as dotted keys, each item of a
    list on a line of its own."""
    return "".join(line + "\n" for key, value in doc.items() for line in _lines(key, value))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m resilience_mw", description=_DESCRIPTION, epilog=_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--state-url", default=os.environ.get("RESILIENCE_STATE_URL"),
                       help="the shared store (sqlite:///path or redis://host:port/db)")
    where.add_argument("--url", help="one worker's admin endpoint (http://host:port/resilience/level)")
    ap.add_argument("--namespace", default=os.environ.get("RESILIENCE_STATE_NAMESPACE")
                    or os.environ.get("RESILIENCE_STATE_SERVICE"),
                    help="on Redis, the service's namespace (its RESILIENCE_STATE_NAMESPACE, else its "
                         "RESILIENCE_STATE_SERVICE or app name); or ?namespace= in the URL")
    ap.add_argument("--token", help="the admin endpoint's token; prefer RESILIENCE_ADMIN_TOKEN: a command line "
                                    "is readable by every local user while it runs")
    ap.add_argument("--json", action="store_true", help="print JSON")
    # --json after the command too (`... status --json`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{status,force,clear,nodes}")
    sub.add_parser("status", parents=[common], help="the override, who runs the health checks, nodes reported down")
    force = sub.add_parser("force", parents=[common], help="force a level in every worker")
    force.add_argument("level", help="Normal, Level1, Level2, Level3 or Emergency (any case)")
    force.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="seconds until it lapses (default: until cleared)")
    sync = StateConfig().sync_interval
    for command in (force, sub.add_parser("clear", parents=[common], help="clear the override in every worker")):
        command.add_argument("--sync-interval", type=float, default=sync, metavar="SECONDS",
                             help=f"the workers' RESILIENCE_STATE_SYNC_INTERVAL, for applied_by (default {sync:g})")
    sub.add_parser("nodes", parents=[common], help="nodes reported down, by whom, until when")
    return ap


def _token(args: argparse.Namespace) -> str | None:
    """The admin token: ``--token``, with a warning (``/proc/<pid>/cmdline`` shows it to
    every local user while the command runs), else ``RESILIENCE_ADMIN_TOKEN``."""
    if args.token is None:
        return os.environ.get("RESILIENCE_ADMIN_TOKEN")
    sys.stderr.write(
        "warning: --token on the command line can be read by every local user (ps, /proc/<pid>/cmdline) while "
        "this runs; put it in RESILIENCE_ADMIN_TOKEN instead\n"
    )
    token: str = args.token
    return token


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``: the arguments, default ``sys.argv[1:]``); the exit
    status."""
    ap = _parser()
    args = ap.parse_args(argv)
    token = _token(args)
    try:
        if args.command == "force":
            args.level = parse_level(args.level).name
        if args.url:
            doc = _through_endpoint(args.url, token, args)
        elif args.state_url:
            store = open_store(args.state_url, field="--state-url", namespace=args.namespace)
            try:
                doc = _through_store(store, args.state_url, args)
            finally:
                store.close()
        else:
            ap.error("give --state-url (or RESILIENCE_STATE_URL) or --url")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except urllib.error.HTTPError as exc:
        sys.stderr.write(f"error: {redact_url(args.url, query=False)} answered {exc.code}: {_reason(exc)}\n")
        return 1
    except RedirectRefused as exc:
        sys.stderr.write(f"error: {redact_url(args.url, query=False)} {exc.reason}\n")
        return 1
    except (StoreError, urllib.error.URLError, OSError) as exc:
        target = redact_url(args.url, query=False) if args.url else redact_store_url(args.state_url or "")
        sys.stderr.write(f"error: {target} did not answer: {describe_error(exc)}\n")
        return 1
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n" if args.json else _text(doc))
    return 0


def _reason(exc: urllib.error.HTTPError) -> str:
    """What an error answer says: its JSON ``error``, else the HTTP reason."""
    try:
        said = json.loads(exc.read(4096) or b"null")
    except (ValueError, OSError):
        said = None
    text = said.get("error") if isinstance(said, dict) else None
    return redact_text(text)[:200] if isinstance(text, str) else str(exc.reason)


if __name__ == "__main__":
    sys.exit(main())
