"""Frozen, validated configuration values.

Invalid values raise :class:`~resilience_mw.ConfigError` at construction, naming the
field and the value. Change a config with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .exceptions import ConfigError
from .model import DegradationLevel

__all__ = ["DegradationConfig"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(name, value, "must be a number")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class DegradationConfig:
    """Thresholds of :class:`~resilience_mw.AutoDegradationManager`.

    CPU and memory thresholds are percentages (0-100), strictly increasing per
    resource from Level1 to Emergency. The error rate (0 < r <= 1) is measured over
    the last ``error_window_seconds`` and counts only once ``min_requests`` requests
    fell in that window. Level1/2/3/Emergency are reached at 1x/1.5x/2x/
    ``error_emergency_multiplier`` x the threshold. Going up is immediate; going down
    needs the lower level to hold for ``cooldown_seconds`` (``0``: at once).
    """

    cpu_threshold_l1: float = 70.0
    cpu_threshold_l2: float = 85.0
    cpu_threshold_l3: float = 95.0
    cpu_threshold_emergency: float = 98.0
    memory_threshold_l1: float = 70.0
    memory_threshold_l2: float = 85.0
    memory_threshold_l3: float = 95.0
    memory_threshold_emergency: float = 98.0
    error_rate_threshold: float = 0.1
    #: the seed's example (20 requests, every third failing: 35 %) stays at Level3
    error_emergency_multiplier: float = 4.0
    error_window_seconds: float = 60.0
    error_window_buckets: int = 12
    min_requests: int = 10
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            _number(f.name, getattr(self, f.name))
        for res in ("cpu", "memory"):
            names = [f"{res}_threshold_{s}" for s in ("l1", "l2", "l3", "emergency")]
            values = [getattr(self, n) for n in names]
            for n, v in zip(names, values, strict=True):
                if not 0 <= v <= 100:
                    raise ConfigError(n, v, "must be a percentage in [0, 100]")
            for (n1, v1), (n2, v2) in zip(
                zip(names, values, strict=True), zip(names[1:], values[1:], strict=True), strict=False
            ):
                if not v1 < v2:
                    raise ConfigError(n2, v2, f"must be greater than {n1}={v1!r}")
        if not 0 < self.error_rate_threshold <= 1:
            raise ConfigError("error_rate_threshold", self.error_rate_threshold, "must be in (0, 1]")
        if not self.error_emergency_multiplier > 2:
            raise ConfigError(
                "error_emergency_multiplier", self.error_emergency_multiplier, "must be > 2 (Level3 is 2x)"
            )
        if not self.error_window_seconds > 0:
            raise ConfigError("error_window_seconds", self.error_window_seconds, "must be > 0")
        if not (isinstance(self.error_window_buckets, int) and 1 <= self.error_window_buckets <= 3600):
            raise ConfigError(
                "error_window_buckets", self.error_window_buckets, "must be an integer in [1, 3600]"
            )
        if not (isinstance(self.min_requests, int) and self.min_requests >= 1):
            raise ConfigError("min_requests", self.min_requests, "must be an integer >= 1")
        if not self.cooldown_seconds >= 0:
            raise ConfigError("cooldown_seconds", self.cooldown_seconds, "must be >= 0")

    def resource_level(self, cpu: float, memory: float) -> DegradationLevel:
        """The level CPU and memory percentages alone call for."""
        for level, suffix in (
            (DegradationLevel.Emergency, "emergency"),
            (DegradationLevel.Level3, "l3"),
            (DegradationLevel.Level2, "l2"),
            (DegradationLevel.Level1, "l1"),
        ):
            if cpu >= getattr(self, f"cpu_threshold_{suffix}") or memory >= getattr(
                self, f"memory_threshold_{suffix}"
            ):
                return level
        return DegradationLevel.Normal

    def error_level(self, error_rate: float, requests: int) -> DegradationLevel:
        """The level the error rate alone calls for (Normal below ``min_requests``)."""
        if requests < self.min_requests:
            return DegradationLevel.Normal
        # 1e-9 of slack: 0.1 * 1.5 is 0.15000000000000002, and 15 % failed must reach Level2
        r = error_rate + 1e-9
        t = self.error_rate_threshold
        if r >= t * self.error_emergency_multiplier:
            return DegradationLevel.Emergency
        if r >= t * 2.0:
            return DegradationLevel.Level3
        if r >= t * 1.5:
            return DegradationLevel.Level2
        if r >= t:
            return DegradationLevel.Level1
        return DegradationLevel.Normal

    def decide(self, cpu: float, memory: float, error_rate: float, requests: int) -> DegradationLevel:
        """The level called for by one sample: the worst of resources and errors."""
        return max(self.resource_level(cpu, memory), self.error_level(error_rate, requests))
