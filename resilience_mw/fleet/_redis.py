"""The Redis state store: the whole fleet shares one Redis (``redis`` extra).

Keys live under ``<namespace>:``. Times come from Redis ``TIME``; expiries are Redis
TTLs or store-clock stamps, never a host's clock. Every call has a short socket
timeout: a slow Redis costs the sync thread that much, never a request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

try:
    import redis
except ImportError:  # the [redis] extra is not installed: RedisStore says so
    redis = None  # type: ignore[assignment]

from .._redact import describe_error, redact_url
from ..exceptions import ConfigError
from .store import TALLIES, NodeReport, Override, StoreError

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# renew a lease only for its holder; take it when free. Returns the holder.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
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

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise StoreError(f"redis store {self.url}: {describe_error(exc)}") from exc

    def now(self) -> float:
        seconds, micros = self._call(self._r.time)
        return float(seconds) + float(micros) / 1e6

    # ----------------------------------------------------------- override

    def override(self) -> Override | None:
        raw = self._call(self._r.get, self._key("override"))
        if raw is None:
            return None
        data = json.loads(raw)
        return Override(data["level"], int(data["version"]), float(data["set_at"]), data["expires_at"], data["actor"])

    def set_override(self, level: str | None, ttl: float | None, actor: str) -> Override:
        version = int(self._call(self._r.incr, self._key("override", "version")))
        now = self.now()
        expires_at = None if ttl is None or level is None else now + ttl
        ov = Override(level, version, now, expires_at, actor)
        value = json.dumps({"level": level, "version": version, "set_at": now, "expires_at": expires_at, "actor": actor})
        px = None if expires_at is None else max(1, int(ttl * 1000))  # type: ignore[operator]
        self._call(lambda: self._r.set(self._key("override"), value, px=px))
        return ov

    # ------------------------------------------------------------ reports

    def report(self, node_id: str, reporter: str, reason: str | None, ttl: float) -> None:
        field = f"{node_id}\x00{reporter}"
        if reason is None:
            self._call(self._r.hdel, self._key("reports"), field)
        else:
            self._call(self._r.hset, self._key("reports"), field, f"{reason}|{self.now() + ttl}")

    def reports(self) -> list[NodeReport]:
        now = self.now()
        found: list[NodeReport] = []
        stale: list[str] = []
        for field, value in self._call(self._r.hgetall, self._key("reports")).items():
            node_id, _, reporter = field.partition("\x00")
            reason, _, expires = value.partition("|")
            if float(expires) <= now:
                stale.append(field)
            else:
                found.append(NodeReport(node_id, reporter, reason, float(expires)))
        if stale:
            self._call(self._r.hdel, self._key("reports"), *stale)
        return found

    def put_counts(self, reporter: str, requests: int, failures: int, ttl: float, *, tally: str = "errors") -> None:
        self._call(self._r.hset, self._tally_key(tally), reporter, f"{requests}|{failures}|{self.now() + ttl}")

    def counts(self, *, tally: str = "errors") -> tuple[int, int]:
        now = self.now()
        requests = failures = 0
        stale = []
        key = self._tally_key(tally)
        for reporter, value in self._call(self._r.hgetall, key).items():
            r, f, expires = value.split("|")
            if float(expires) <= now:
                stale.append(reporter)
            else:
                requests, failures = requests + int(r), failures + int(f)
        if stale:
            self._call(self._r.hdel, key, *stale)
        return requests, failures

    def _tally_key(self, tally: str) -> str:
        if tally not in TALLIES:
            raise ValueError(f"unknown tally {tally!r}")
        return self._key("counts" if tally == "errors" else f"counts:{tally}")

    # ------------------------------------------------------ leases, claims

    def lease(self, name: str, holder: str, ttl: float) -> str | None:
        held = self._call(self._lease, [self._key("lease", name)], [holder, max(1, int(ttl * 1000))])
        return None if held is None else str(held)

    def holder(self, name: str) -> str | None:
        held = self._call(self._r.get, self._key("lease", name))
        return None if held is None else str(held)

    def release(self, name: str, holder: str) -> None:
        self._call(self._release, [self._key("lease", name)], [holder])

    def claim(self, key: str, ttl: float) -> bool:
        return bool(self._call(lambda: self._r.set(self._key("claim", key), "1", nx=True, px=max(1, int(ttl * 1000)))))

    def close(self) -> None:
        self._r.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"
