"""The fleet: state shared by the workers of a host (SQLite) or of many hosts (Redis).

* :mod:`.store`: the records and the :class:`StateStore` protocol;
* :mod:`.stores`: :func:`open_store`, a store from its URL; :mod:`._sqlite`,
  :mod:`._redis`: the backends;
* :mod:`.sync`: :class:`StateSync`, each worker's exchange with the store;
* :mod:`.cli`: ``python -m resilience_mw``.

Everything but the protocol is imported on first use (the backends load their drivers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy
from .store import NodeReport, Override, StateStore, StoreError

if TYPE_CHECKING:
    from .stores import open_store
    from .sync import StateSync

__getattr__ = lazy(__name__, {"open_store": ".stores", "StateSync": ".sync"})

__all__ = ["NodeReport", "Override", "StateStore", "StateSync", "StoreError", "open_store"]
