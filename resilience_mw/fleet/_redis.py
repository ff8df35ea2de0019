"""The Redis state store: the whole fleet shares one Redis (``redis`` extra).

Keys live under ``<namespace>:``. Times come from Redis ``TIME``; expiries are Redis
TTLs or store-clock stamps, never a host's clock. Every call has a short socket
timeout: a slow Redis costs the sync thread that much, never a request.

A key of the wrong type, a value that does not decode, or a lease or claim with no
expiry (none of ours: we always set one) raises :class:`StoreDataError` naming the key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

try:
    import redis
except ImportError:  # the [redis] extra is not installed: RedisStore says so
    redis = None  # type: ignore[assignment]

from .._redact import describe_error, redact_url
from ..exceptions import ConfigError
from .store import (
    TALLIES,
    NodeReport,
    Outcomes,
    Override,
    ServiceIdentity,
    StoreDataError,
    StoreError,
    add_outcomes,
    decode_identity,
    decode_outcomes,
    decode_override,
    encode_identity,
    encode_outcomes,
    encode_override,
)

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# renew a lease only for its holder; take it when free. Returns the holder and, for
# another holder's lease, its time to live (-1: none, so not one of ours).
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], 0}
end
return {holder, redis.call('PTTL', KEYS[1])}
"""
#: the answers of a command on a key that holds something else
_DATA_ERRORS = ("WRONGTYPE", "not an integer", "not a valid float")
# one reporter's outcomes, stamped with their expiry by Redis's clock, in one round trip;
# the hash lives as long as its longest-lived entry (a fleet that stops leaves nothing)
_PUT_OUTCOMES = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local ttl = tonumber(ARGV[3])
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + ttl / 1000
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.6f', expires) .. '|' .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """See the module docstring."""

    scope = "fleet"

    def __init__(self, url: str, namespace: str, *, field: str = "state_url", timeout: float = 0.5) -> None:
        if redis is None:
            raise ConfigError(field, redact_url(url), "needs the redis client", hint="pip install 'resilience_mw[redis]'")
        self.url = redact_url(url)
        self.namespace = namespace
        try:
            self._r: Any = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(field, redact_url(url), f"is not a Redis URL ({describe_error(exc)})") from None
        try:
            self._r.ping()
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            # a wrong password or user: no later retry will fix it
            raise ConfigError(field, redact_url(url), f"refused the credentials ({type(exc).__name__})") from None
        except redis.RedisError as exc:
            # down right now: the workers start on local state and the sync connects later
            log.warning("state store %s not reachable at startup (%s); going on with local state", self.url,
                        describe_error(exc))
        self._lease = self._r.register_script(_LEASE)
        self._release = self._r.register_script(_RELEASE)
        self._put_outcomes = self._r.register_script(_PUT_OUTCOMES)

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def _call(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Any:
        try:
            return fn(*args)
        except redis.ResponseError as exc:
            if key is not None and any(marker in str(exc) for marker in _DATA_ERRORS):
                # the store answered: what is at the key is not ours
                raise StoreDataError(key, describe_error(exc)) from None
            raise StoreError(f"redis store {self.url}: {describe_error(exc)}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"redis store {self.url}: {describe_error(exc)}") from exc

    def now(self) -> float:
        seconds, micros = self._call(self._r.time)
        return float(seconds) + float(micros) / 1e6

    # ----------------------------------------------------------- override

    def override(self) -> Override | None:
        key = self._key("override")
        raw = self._call(self._r.get, key, key=key)
        return None if raw is None else decode_override(key, raw)

    def set_override(self, level: str | None, ttl: float | None, actor: str) -> Override:
        version_key = self._key("override", "version")
        version = int(self._call(self._r.incr, version_key, key=version_key))
        now = self.now()
        expires_at = None if ttl is None or level is None else now + ttl
        ov = Override(level, version, now, expires_at, actor)
        px = None if ttl is None or level is None else max(1, int(ttl * 1000))
        key = self._key("override")
        self._call(lambda: self._r.set(key, encode_override(ov), px=px), key=key)
        return ov

    # ------------------------------------------------------------ reports

    def report(self, node_id: str, reporter: str, reason: str | None, ttl: float) -> None:
        field, key = f"{node_id}\x00{reporter}", self._key("reports")
        if reason is None:
            self._call(self._r.hdel, key, field, key=key)
        else:
            value = f"{reason}|{self.now() + ttl}"
            self._call(self._r.hset, key, field, value, key=key)

    def reports(self) -> list[NodeReport]:
        now = self.now()
        key = self._key("reports")
        found: list[NodeReport] = []
        stale: list[str] = []
        bad: list[str] = []
        for field, value in self._call(self._r.hgetall, key, key=key).items():
            node_id, sep, reporter = field.partition("\x00")
            reason, _, expires = value.partition("|")
            try:
                expires_at = float(expires)
                if not sep or not reason or math.isnan(expires_at):
                    raise ValueError
            except ValueError:
                bad.append(field)  # kept: it may be another version's, and is not ours to delete
                continue
            if expires_at <= now:
                stale.append(field)
            else:
                found.append(NodeReport(node_id, reporter, reason, expires_at))
        if stale:
            self._call(self._r.hdel, key, *stale, key=key)
        if bad:
            raise StoreDataError(key, f"{len(bad)} field(s) not 'node\\0reporter' = 'reason|expiry': {bad[0][:40]!r}",
                                 partial=found)
        return found

    def put_counts(self, reporter: str, requests: int, failures: int, ttl: float, *, tally: str = "errors") -> None:
        key = self._tally_key(tally)
        self._call(self._r.hset, key, reporter, f"{requests}|{failures}|{self.now() + ttl}", key=key)

    def counts(self, *, tally: str = "errors") -> tuple[int, int]:
        now = self.now()
        requests = failures = 0
        stale = []
        bad = []
        key = self._tally_key(tally)
        for reporter, value in self._call(self._r.hgetall, key, key=key).items():
            try:
                r, f, expires = value.split("|")
                n_requests, n_failures, expires_at = int(r), int(f), float(expires)
            except ValueError:
                bad.append(reporter)
                continue
            if expires_at <= now:
                stale.append(reporter)
            else:
                requests, failures = requests + n_requests, failures + n_failures
        if stale:
            self._call(self._r.hdel, key, *stale, key=key)
        if bad:
            raise StoreDataError(key, f"{len(bad)} field(s) not 'requests|failures|expiry': {bad[0][:40]!r}",
                                 partial=(requests, failures))
        return requests, failures

    def put_outcomes(self, reporter: str, outcomes: Mapping[str, Outcomes], ttl: float) -> None:
        key = self._key("outcomes")
        self._call(self._put_outcomes, [key], [reporter, encode_outcomes(outcomes), max(1, int(ttl * 1000))], key=key)

    def outcomes(self) -> dict[str, Outcomes]:
        key = self._key("outcomes")

        def read() -> tuple[Any, Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.time()
            pipe.hgetall(key)
            clock, entries = pipe.execute()
            return clock, entries

        (seconds, micros), entries = self._call(read, key=key)  # one round trip
        now = float(seconds) + float(micros) / 1e6
        total: dict[str, Outcomes] = {}
        stale: list[str] = []
        bad: list[str] = []
        for reporter, value in entries.items():
            expires, sep, text = value.partition("|")
            try:
                expires_at = float(expires)
                if not sep or math.isnan(expires_at):
                    raise ValueError
                if expires_at <= now:
                    stale.append(reporter)
                    continue
                add_outcomes(total, decode_outcomes(key, text))
            except (ValueError, StoreDataError):
                bad.append(reporter)  # kept: it may be another version's, and is not ours to delete
        if stale:
            self._call(self._r.hdel, key, *stale, key=key)
        if bad:
            raise StoreDataError(key, f"{len(bad)} field(s) not 'expiry|{{node: [requests, failures, micros]}}': "
                                 f"{bad[0][:40]!r}", partial=total)
        return total

    def _tally_key(self, tally: str) -> str:
        if tally not in TALLIES:
            raise ValueError(f"unknown tally {tally!r}")
        return self._key("counts" if tally == "errors" else f"counts:{tally}")

    # ------------------------------------------------------ leases, claims

    def lease(self, name: str, holder: str, ttl: float) -> str | None:
        key = self._key("lease", name)
        held, pttl = self._call(self._lease, [key], [holder, max(1, int(ttl * 1000))], key=key)
        if int(pttl) == -1:  # a lease that never lapses would stop health checks for good
            raise StoreDataError(key, f"held by {str(held)[:40]!r} with no expiry (not a lease resilience_mw wrote)")
        return None if held is None else str(held)

    def holder(self, name: str) -> str | None:
        key = self._key("lease", name)
        held = self._call(self._r.get, key, key=key)
        return None if held is None else str(held)

    def release(self, name: str, holder: str) -> None:
        key = self._key("lease", name)
        self._call(self._release, [key], [holder], key=key)

    def claim(self, key: str, ttl: float) -> bool:
        name = self._key("claim", key)
        if self._call(lambda: self._r.set(name, "1", nx=True, px=max(1, int(ttl * 1000))), key=name):
            return True
        if int(self._call(self._r.pttl, name, key=name)) == -1:  # would block the alert for good
            raise StoreDataError(name, "set with no expiry (not a claim resilience_mw wrote)")
        return False

    # ------------------------------------------------------------ identity

    def announce(self, identity: ServiceIdentity, ttl: float) -> list[ServiceIdentity]:
        key = self._key("services")
        now = self.now()
        field = f"{identity.service}\x00{identity.fingerprint}"
        self._call(self._r.hset, key, field, encode_identity(identity, now + ttl), key=key)
        found: list[ServiceIdentity] = []
        stale: list[str] = []
        bad: list[str] = []
        for name, value in self._call(self._r.hgetall, key, key=key).items():
            service, sep, fingerprint = name.partition("\x00")
            try:
                if not sep:
                    raise StoreDataError(key, "no service\\0fingerprint field name")
                other, expires_at = decode_identity(key, service, fingerprint, value)
            except StoreDataError:
                bad.append(name)
                continue
            if expires_at <= now:
                stale.append(name)
            else:
                found.append(other)
        if stale:
            self._call(self._r.hdel, key, *stale, key=key)
        if bad:
            raise StoreDataError(key, f"{len(bad)} field(s) not a service identity: {bad[0][:40]!r}", partial=found)
        return found

    def check(self) -> bool:
        return False  # a Redis address names one server: nothing to notice

    def close(self) -> None:
        self._r.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"
