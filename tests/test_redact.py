"""The redaction helpers: what of a URL, header, text or error may be shown."""

from __future__ import annotations

import pytest

from resilience_mw._redact import describe_error, redact_store_url, redact_text, redact_url, redact_value


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@h:80/x?q=1", "http://***@h:80/x?q=1"),
        ("http://user:p/ss?w#rd@h/x", "http://***@h/x"),  # a password urlsplit would take for a path
        ("http://user:a@b@h", "http://***@h"),
        ("https://h/base", "https://h/base"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_hides_userinfo(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_without_query_for_logs() -> None:
    assert redact_url("http://u:p@h/x?token=abc#frag", query=False) == "http://***@h/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///tmp/shop/state.db", "sqlite:///tmp/shop/state.db"),
        ("redis://:pw@h:6379/0?namespace=shop", "redis://***@h:6379/0?namespace=shop"),
        ("redis://h:6379/0?password=pw&namespace=shop&db=2", "redis://h:6379/0?password=***&namespace=shop&db=2"),
        ("rediss://u:pw@h/0?ssl_cert_reqs=none#x", "rediss://***@h/0?ssl_cert_reqs=***"),
    ],
)
def test_a_store_url_shows_no_password_even_in_its_query(url: str, shown: str) -> None:
    assert redact_store_url(url) == shown


def test_redact_text_hides_urls_queries_and_tokens_inside_text() -> None:
    text = "Max retries exceeded with url: /api?key=SECRET (Caused by x) at http://u:SECRET@h/p?k=SECRET; Bearer SECRET"
    out = redact_text(text)
    assert "SECRET" not in out and "/api?***" in out and "http://***@h/p?***" in out and "Bearer ***" in out


def test_redact_value_masks_secrets_and_nested_urls() -> None:
    assert redact_value("tok", secret=True) == "***"
    assert redact_value([{"endpoint": "http://u:p@h"}]) == [{"endpoint": "http://***@h"}]
    assert redact_value(5) == 5


def test_describe_error_is_one_short_redacted_line() -> None:
    exc = ConnectionError("failed\nfor http://u:SECRET@h/x?k=SECRET " + "x" * 500)
    text = describe_error(exc)
    assert text.startswith("ConnectionError: failed for http://***@h/x?***")
    assert "SECRET" not in text and "\n" not in text and len(text) < 240
    assert describe_error(ValueError()) == "ValueError"
