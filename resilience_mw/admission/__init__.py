"""Admission: which request to serve now, by how long it queued, its deadline, its class
and its user, and how many may run at once.

* :mod:`.rules`: pure rules (stamps, deadlines, user buckets, shares, tolerances);
* :mod:`.limit`: :class:`AdaptiveLimit`, the adaptive concurrency limit.

The names of the former ``resilience_mw.admission`` module are here unchanged.
"""

from __future__ import annotations

from .limit import AdaptiveLimit
from .rules import (
    DEFAULT_SHED_TABLE,
    MAX_COOKIE_HEADER,
    QUEUE_SCALE,
    Criticality,
    bucket_secret,
    client_address,
    cookie_value,
    inbound_deadline,
    parse_deadline,
    parse_request_start,
    queue_tolerance,
    server_queue_time,
    shed_share,
    user_bucket,
)

__all__ = [
    "DEFAULT_SHED_TABLE",
    "MAX_COOKIE_HEADER",
    "QUEUE_SCALE",
    "AdaptiveLimit",
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
