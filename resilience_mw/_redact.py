"""Redaction: the one place that decides what of a URL, an error or a token may be shown.

Every message, ``repr``, log line and document the library produces that shows a URL
or a token goes through these functions (the library shows no request headers):

* :func:`redact_url` hides ``user:password@`` (even when the password holds ``/``,
  ``?``, ``#`` or ``@``, which ``urllib.parse`` would take for the path);
  ``query=False`` also drops the query string and fragment (for log lines).
* :func:`redact_store_url` is how a state store's URL is shown (the CLI's ``status``,
  the admin endpoint): no password, and of the query only ``namespace`` and ``db``.
* :func:`redact_text` does the same to every URL inside free text (exception
  messages from urllib3 quote the URL they failed on) and hides bearer tokens.
* :func:`redact_value` is what :class:`~resilience_mw.ConfigError` shows of a value.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "MASK",
    "describe_error",
    "redact_store_url",
    "redact_text",
    "redact_url",
    "redact_value",
]

MASK = "***"

# scheme://, then anything up to the *last* "@" of the same token: a password may hold
# "/", "?", "#" or "@", and hiding a little too much beats showing a secret.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s'\"<>]*@")
# a query string or fragment inside free text, up to whitespace, a quote or a bracket
_QUERY = re.compile(r"(?P<path>(?:://|\burl: |^|\s)[^\s'\"<>?#]*)[?#][^\s'\"<>)]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]+")


def redact_url(url: str, *, query: bool = True) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``.

    :param query: keep the query string and fragment (``False`` for log lines, where a
        query string may carry a token).
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url)
    if not query:
        cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
    return text


#: query parameters of a store URL that never hold a secret (``redis://h/0?password=...``
#: does): shown as they are, every other value masked
_STORE_PARAMS = frozenset({"namespace", "db"})


def redact_store_url(url: str) -> str:
    """A state store's ``url`` as shown to people: no ``user:password@``, and only the
    query parameters known to hold no secret (``namespace``, ``db``) with their value."""
    base, _, query = redact_url(url).partition("?")
    query = query.partition("#")[0]
    if not query:
        return base
    params = [f"{k}={v if k in _STORE_PARAMS else MASK}" for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{base}?{'&'.join(params)}" if params else base


def redact_text(text: str) -> str:
    """Free text with credentials in URLs, query strings and bearer tokens hidden."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['path']}?{MASK}", text)
    return _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)


def redact_value(value: Any, *, secret: bool = False) -> Any:
    """What an error message may show of a configured ``value``: :data:`MASK` for a
    secret, strings (and the strings inside lists, tuples and dicts) with URL
    credentials hidden, anything else as it is."""
    if secret:
        return MASK
    if isinstance(value, str):
        return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", value)
    if type(value) in (list, tuple):
        return type(value)(redact_value(v) for v in value)
    if type(value) is dict:
        return {k: redact_value(v) for k, v in value.items()}
    return value


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """``TypeName: message`` of ``exc`` for one log line or message: redacted, and cut to
    ``limit`` characters (urllib3 nests three exception reprs in one message)."""
    text = redact_text(str(exc)).replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
