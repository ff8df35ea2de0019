"""Admission rules for one request: how long it queued, its deadline, its criticality,
and whether the level sheds it. Pure functions of their inputs (the middleware supplies
the clock and the headers).

* **Queueing delay** from the proxy's request-start stamp (``X-Request-Start``:
  ``t=<seconds.fraction>``, ``t=<ms>``, ``t=<us>``, or a bare number; the unit is told by
  its size). A stamp from the future (beyond a small skew) or from more than an hour ago
  is ignored: clocks disagree, and a wrong stamp must not shed traffic. The proxy must set
  the header, replacing any the client sent: a stamp is believed.
  Without a stamp, the wait for a thread inside the server is taken where the server tells
  it (:func:`server_queue_time`: waitress; gunicorn's gthread does not).
* **Deadlines**: an absolute epoch time in ms, or a relative timeout (``2.5``, ``2.5s``,
  ``250ms``).
* **Criticality**: ``critical_plus`` > ``critical`` (the default) > ``sheddable_plus`` >
  ``sheddable``. As the level rises the lowest classes are shed first
  (:data:`DEFAULT_SHED_TABLE`); within the class being shed, a share of the *users* is
  shed, by a stable hash of their key, so the same users keep full service.
  ``critical_plus`` is never shed.
* **Queue tolerance by priority**: with the queueing delay known, each request may wait
  only as long as its class and user allow (:func:`queue_tolerance`): the lowest class
  first, user by user, then the next. A process that falls behind sheds exactly as much
  of its lowest priorities as it must for its queue to stay short, at once, without a
  level having to rise first; and it never sheds while it keeps up (the CPU stays busy).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from contextvars import ContextVar

from ..model import Criticality, DegradationLevel

__all__ = [
    "DEFAULT_SHED_TABLE",
    "MAX_COOKIE_HEADER",
    "QUEUE_SCALE",
    "Criticality",
    "bucket_secret",
    "client_address",
    "cookie_value",
    "inbound_deadline",
    "parse_deadline",
    "parse_request_start",
    "queue_tolerance",
    "server_queue_time",
    "shed_share",
    "user_bucket",
]

#: the deadline of the request being served (epoch seconds) and the header it came in,
#: set by the middleware while the app runs; the requests adapter spends no more than
#: what is left of it and forwards it downstream
inbound_deadline: ContextVar[tuple[float, str] | None] = ContextVar("resilience_mw_deadline", default=None)

#: a stamp this far in the future is still taken (clock skew between proxy and worker)
FUTURE_SKEW = 1.0
#: a stamp older than this is taken for a broken clock, not a queue
MAX_PLAUSIBLE_QUEUE = 3600.0


#: level -> share of each class's users shed (a class not listed is not shed)
DEFAULT_SHED_TABLE: Mapping[DegradationLevel, Mapping[Criticality, float]] = {
    DegradationLevel.Normal: {},
    DegradationLevel.Level1: {Criticality.SHEDDABLE: 0.5},
    DegradationLevel.Level2: {Criticality.SHEDDABLE: 1.0, Criticality.SHEDDABLE_PLUS: 0.5},
    DegradationLevel.Level3: {Criticality.SHEDDABLE: 1.0, Criticality.SHEDDABLE_PLUS: 1.0, Criticality.CRITICAL: 0.25},
    DegradationLevel.Emergency: {
        Criticality.SHEDDABLE: 1.0,
        Criticality.SHEDDABLE_PLUS: 1.0,
        Criticality.CRITICAL: 0.5,
    },
}

_NUMBER = re.compile(r"^\s*(?:t=)?(\d+(?:\.\d+)?)\s*$")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


def _epoch_seconds(number: float) -> float:
    """A Unix time given in s, ms, us or ns, as seconds (told apart by size)."""
    for scale in (1.0, 1e3, 1e6, 1e9):
        if number / scale < 1e11:  # seconds since 1970 stay below 1e11 for millennia
            return number / scale
    return number / 1e9


def parse_request_start(value: str | None, now: float) -> float | None:
    """Seconds the request waited before ``now`` (epoch seconds), from a request-start
    stamp; ``None`` for a missing, malformed or implausible one."""
    if not value:
        return None
    m = _NUMBER.match(value)
    if m is None:
        return None
    waited = now - _epoch_seconds(float(m[1]))
    if waited < -FUTURE_SKEW or waited > MAX_PLAUSIBLE_QUEUE:
        return None
    return max(0.0, waited)


def server_queue_time(environ: Mapping[str, object], now: float) -> float | None:
    """Seconds the request waited inside the server for a free thread, where the server
    tells (waitress: its channel's last activity, when the request's last bytes came);
    ``None`` elsewhere. The proxy's stamp, when there is one, covers this wait too."""
    check = environ.get("waitress.client_disconnected")
    arrived = getattr(getattr(check, "__self__", None), "last_activity", None)
    if not isinstance(arrived, float):
        return None
    waited = now - arrived
    return max(0.0, waited) if -FUTURE_SKEW <= waited <= MAX_PLAUSIBLE_QUEUE else None


def parse_deadline(value: str | None, now: float) -> float | None:
    """The deadline, as epoch seconds, from an absolute epoch time in ms (or s, us) or a
    relative timeout (``2.5``, ``2.5s``, ``250ms``); ``None`` if malformed."""
    if not value:
        return None
    m = _RELATIVE.match(value)
    if m is None:
        return None
    number, unit = float(m[1]), m[2]
    if unit is None and number >= 1e8:  # an absolute time
        return _epoch_seconds(number)
    seconds = number / 1000 if unit == "ms" else number
    if seconds > 86_400:
        return None
    return now + seconds


def user_bucket(key: str, secret: bytes = b"") -> float:
    """A stable number in [0, 1) for a user key: the same user, the same number, in
    every process and on every host. With ``secret`` (a per-deployment key, from
    :func:`bucket_secret`), a client that chooses its own key cannot search offline for
    one that is shed last."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=secret).digest()
    return int.from_bytes(digest, "big") / 2**64


def bucket_secret(secret: str) -> bytes:
    """The key :func:`user_bucket` takes, from a secret of any length."""
    return hashlib.blake2b(secret.encode(), digest_size=32).digest()


#: most bytes of a Cookie header searched for the user's cookie
MAX_COOKIE_HEADER = 64 * 1024


def cookie_value(header: str, name: str) -> str | None:
    """The value of the cookie ``name`` in a ``Cookie`` header, or ``None``.

    Linear in the header and bounded (the first :data:`MAX_COOKIE_HEADER` characters):
    ``http.cookies.SimpleCookie`` is quadratic on some CPython versions and gives up on
    the whole header at its first malformed cookie; here a malformed pair is skipped.
    """
    for pair in header[:MAX_COOKIE_HEADER].split(";"):
        key, eq, value = pair.partition("=")
        if eq and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def client_address(environ: Mapping[str, object], trusted_proxies: int) -> str:
    """The client's address behind ``trusted_proxies`` proxies, as werkzeug's ``ProxyFix``
    reads it: the ``trusted_proxies``-th ``X-Forwarded-For`` value from the right (each
    trusted proxy appends the address it got the request from), else ``REMOTE_ADDR``
    (0 proxies, or fewer values than trusted proxies)."""
    if trusted_proxies > 0:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if isinstance(forwarded, str):
            values = forwarded.split(",")
            if len(values) >= trusted_proxies:
                return values[-trusted_proxies].strip()
    return str(environ.get("REMOTE_ADDR", ""))


#: each class's queue tolerance, in units of the lowest (``sheddable``'s first user); critical
#: traffic gets a wide margin over the others: it is shed only when shedding all of them has
#: not kept the queue short
QUEUE_SCALE: Mapping[Criticality, float] = {
    Criticality.SHEDDABLE: 1.0,
    Criticality.SHEDDABLE_PLUS: 2.0,
    Criticality.CRITICAL: 8.0,
    Criticality.CRITICAL_PLUS: math.inf,
}


def queue_tolerance(criticality: Criticality, bucket: float, lowest: float) -> float:
    """How long a request may have queued and still be served: ``lowest`` times its
    class's :data:`QUEUE_SCALE`, times up to 2 by its user's bucket (from
    :func:`user_bucket`). A queue that grows sheds the lowest classes first, user by user
    (the same users first, every time); ``critical_plus`` tolerates any wait."""
    return lowest * QUEUE_SCALE[criticality] * 2**bucket


def shed_share(
    level: DegradationLevel,
    criticality: Criticality,
    table: Mapping[DegradationLevel, Mapping[Criticality, float]] = DEFAULT_SHED_TABLE,
) -> float:
    """Share of ``criticality``'s users shed at ``level`` (0: none; ``critical_plus``
    always 0)."""
    if criticality is Criticality.CRITICAL_PLUS:
        return 0.0
    return table.get(level, {}).get(criticality, 0.0)
