"""Open the state store a URL names (see :mod:`resilience_mw.fleet.store` for what each shares)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from .._redact import redact_url
from ..exceptions import ConfigError
from ._redis import RedisStore
from ._sqlite import SQLiteStore
from .store import StateStore

__all__ = ["open_store"]


#: the namespace of a Redis store when neither the URL nor the caller names one (the CLI
#: without ``?namespace=``, a StateSync built by hand)
DEFAULT_NAMESPACE = "resilience"


def _namespace(query: Mapping[str, list[str]], url: str, field: str, default: str | None, fallback: str | None) -> str:
    names = query.get("namespace")
    if names is None:
        return default or fallback or DEFAULT_NAMESPACE
    name = names[-1]
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(field, redact_url(url), "namespace= must be letters, digits, '-', '_' or '.'")
    if default is not None and name != default:
        raise ConfigError(field, redact_url(url), f"namespace={name} in the URL but {default!r} given as the "
                          "namespace setting: give one", secret=False)
    return name


def open_store(
    url: str,
    *,
    field: str = "state_url",
    timeout: float = 0.5,
    namespace: str | None = None,
    default_namespace: str | None = None,
) -> StateStore:
    """The store ``url`` names, checked at once: a bad URL, an unreachable file or bad
    credentials raise :class:`~resilience_mw.ConfigError` naming ``field``.

    A Redis store's keys go under the URL's ``?namespace=``, else ``namespace`` (both,
    and different: a ConfigError), else ``default_namespace`` (what the service's name
    gives), else ``resilience``. A SQLite file is one namespace of its own: these do not
    apply to it.

    A Redis that is merely down at startup is not an error: workers start with local
    state and the sync connects when it can.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(field, url, f"is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    if scheme == "sqlite":
        path = parts.path
        if parts.netloc or not path or path == "/":
            raise ConfigError(field, url, "must be sqlite:///absolute/path/file.db", hint="three slashes, then the path")
        return SQLiteStore(path, field=field, timeout=timeout)
    if scheme in ("redis", "rediss"):
        # namespace= is ours; every other query parameter is the redis client's
        rest = urlencode([(k, v) for k, vs in query.items() if k != "namespace" for v in vs])
        name = _namespace(query, url, field, namespace, default_namespace)
        return RedisStore(parts._replace(query=rest).geturl(), name, field=field, timeout=timeout)
    raise ConfigError(
        field, redact_url(url), "must be sqlite:///path/file.db, redis://host:port/db or rediss://...", secret=False
    )
