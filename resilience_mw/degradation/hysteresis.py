"""Pure rules that turn samples into levels: a level called for by a *sustained*
reading, and a level that goes up at once and down only after a cooldown.

No lock, no clock of its own: the degradation manager feeds both under its lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import DegradationLevel

__all__ = ["Settler", "sustained"]


def sustained(history: Iterable[DegradationLevel], needed: int) -> DegradationLevel:
    """The highest level that at least ``needed`` samples of ``history`` called for
    (a sample calling for Level3 also calls for Level1 and Level2): one spike among
    calm samples changes nothing."""
    counts = [0] * (DegradationLevel.Emergency + 1)
    for level in history:
        counts[level] += 1
    at_or_above = 0
    for level in reversed(DegradationLevel):
        at_or_above += counts[level]
        if at_or_above >= needed:
            return level
    return DegradationLevel.Normal


class Settler:
    """One level that rises at once and falls only after the lower level held for
    ``cooldown`` seconds (to the highest level seen during that time)."""

    __slots__ = ("_hold_max", "_lower_since", "cooldown", "level")

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.level = DegradationLevel.Normal
        self._lower_since: float | None = None
        self._hold_max = DegradationLevel.Normal

    def settle(self, target: DegradationLevel, now: float) -> DegradationLevel:
        """Feed one target level at time ``now``; the level in force after it."""
        if target >= self.level:
            self._lower_since = None
            self.level = target
            return target
        if self._lower_since is None:
            self._lower_since, self._hold_max = now, target
        else:
            self._hold_max = max(self._hold_max, target)
        if now - self._lower_since >= self.cooldown:
            self._lower_since = None
            self.level = self._hold_max
        return self.level

    @property
    def lower_since(self) -> float | None:
        """Since when the level has been waiting to come down (``None``: it is not)."""
        return self._lower_since

    def cooldown_remaining(self, now: float) -> float | None:
        """Seconds until the level may come down, ``None`` when it is not waiting to."""
        if self._lower_since is None:
            return None
        return max(0.0, self._lower_since + self.cooldown - now)
