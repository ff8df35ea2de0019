"""Fork safety: objects that own locks or threads get a fresh start in a forked child.

After ``os.fork()`` (gunicorn ``--preload``, multiprocessing's fork start method) only
the forking thread exists in the child, and any lock another thread held at that
moment stays locked forever. Objects register here; in the child their
``_after_fork_in_child()`` runs before any other code, replacing locks and restarting
threads that were running in the parent.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registry: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def register(obj: _ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every forked child while ``obj`` lives."""
    _registry.add(obj)


def _run_hooks() -> None:
    # Locks first (state owners), then threads (workers), so restarted threads find fresh locks.
    objs = sorted(list(_registry), key=lambda o: getattr(o, "_fork_order", 0))
    for obj in objs:
        try:
            obj._after_fork_in_child()
        except Exception:
            log.exception("after-fork hook of %r failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_hooks)
