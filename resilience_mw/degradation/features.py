"""The feature table: which features are on at which degradation level.

The ported design caches feature decisions in an LRU; here the whole table is precomputed per
level when it changes (registration is rare), so a lookup is one dict access and
can never be stale.

============  ==========================================
Feature       switched off from
============  ==========================================
CoreFunction  never
Analytics     Level1
DetailedLogs  Level2
Caching       Level3
NonEssential  Level1 (on only at Normal)
(any other)   Emergency keeps only the core
============  ==========================================
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping

from .. import _fork
from ..exceptions import ConfigError
from ..model import DegradationLevel, Feature, parse_level

__all__ = ["DEFAULT_TABLE", "FeatureTable"]

#: The ported design's table: the level from which each feature is off (``None``: never).
DEFAULT_TABLE: Mapping[Hashable, DegradationLevel | None] = {
    Feature.CoreFunction: None,
    Feature.Analytics: DegradationLevel.Level1,
    Feature.DetailedLogs: DegradationLevel.Level2,
    Feature.Caching: DegradationLevel.Level3,
    Feature.NonEssential: DegradationLevel.Level1,
}


class FeatureTable:
    """Features (the :class:`Feature` members or any hashable name) and when they turn off.

    At :attr:`DegradationLevel.Emergency` only features that never turn off stay on.
    """

    def __init__(self, table: Mapping[Hashable, DegradationLevel | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._off_at: dict[Hashable, DegradationLevel | None] = {}
        self._by_level: dict[DegradationLevel, frozenset[Hashable]] = {}
        if table is not None and not isinstance(table, Mapping):
            raise ConfigError("table", table, "must be a mapping {feature: level or None}")
        for feature, level in (table if table is not None else DEFAULT_TABLE).items():
            self._off_at[feature] = self._check(feature, level, f"table[{feature!r}]")
        self._recompute()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def _check(
        feature: Hashable, level: DegradationLevel | int | str | None, name: str
    ) -> DegradationLevel | None:
        try:
            hash(feature)
        except TypeError:
            raise ConfigError("feature", feature, "must be hashable (a Feature member or a name)") from None
        return None if level is None else parse_level(level, name)

    def register(self, feature: Hashable, off_at: DegradationLevel | str | None) -> None:
        """Add or change ``feature``: off from level ``off_at`` (``None``: core, never off)."""
        level = self._check(feature, off_at, "off_at")
        with self._lock:
            self._off_at[feature] = level
            self._recompute()

    def _recompute(self) -> None:
        by_level = {}
        for level in DegradationLevel:
            by_level[level] = frozenset(
                f
                for f, off in self._off_at.items()
                if off is None or (level < off and level < DegradationLevel.Emergency)
            )
        self._by_level = by_level  # one assignment: readers see the old or the new table

    def is_available(self, feature: Hashable, level: DegradationLevel) -> bool:
        """Whether ``feature`` is on at ``level``; unknown features raise ``ConfigError``."""
        if feature in self._by_level[level]:
            return True
        if feature not in self._off_at:
            raise ConfigError("feature", feature, f"not registered (known: {list(self._off_at)})")
        return False

    def available(self, level: DegradationLevel) -> frozenset[Hashable]:
        """Every feature that is on at ``level``."""
        return self._by_level[level]

    def off_at(self) -> dict[Hashable, DegradationLevel | None]:
        """A copy of the table: feature -> level from which it is off."""
        return dict(self._off_at)
