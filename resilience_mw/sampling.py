"""System samples for the degradation manager: CPU and memory percentages.

:class:`SystemSampler` reads CPU with ``psutil.cpu_percent(interval=None)`` (it never
blocks; :meth:`SystemSampler.prime` must run once in the sampling thread, because
psutil keeps its baseline per thread and the first call returns a meaningless 0.0).
Memory is a percentage of the container's limit when a cgroup limit is set (v2
``memory.max``/``memory.current``, v1 ``memory.limit_in_bytes``/``memory.usage_in_bytes``),
else of the host (``psutil.virtual_memory()``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psutil

from .exceptions import ConfigError

__all__ = ["Sample", "SystemSampler", "cgroup_memory_percent"]

log = logging.getLogger(__name__)

#: cgroup v1 reports "no limit" as a huge number near 2**63
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU and memory use, in percent."""

    cpu: float
    memory: float


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_memory_percent(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Memory use as a percent of this cgroup's limit, or ``None`` if no limit is set."""
    for limit_file, usage_file in (
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ):
        limit = _read_int(limit_file)
        if limit is None or limit <= 0 or limit >= _V1_UNLIMITED:
            continue
        usage = _read_int(usage_file)
        if usage is not None:
            return min(100.0, 100.0 * usage / limit)
    return None


class SystemSampler:
    """Callable returning a :class:`Sample` of this machine (or container).

    :param cgroup_root: where to look for cgroup memory files (tests pass a temp dir).
    """

    def __init__(self, cgroup_root: Path | str = Path("/sys/fs/cgroup")) -> None:
        if not isinstance(cgroup_root, (str, Path)):
            raise ConfigError("cgroup_root", cgroup_root, "must be a path")
        self.cgroup_root = Path(cgroup_root)

    def prime(self) -> None:
        """Take psutil's CPU baseline in the calling thread (its first reading is 0.0)."""
        psutil.cpu_percent(interval=None)

    def __call__(self) -> Sample:
        cpu = float(psutil.cpu_percent(interval=None))
        mem = cgroup_memory_percent(self.cgroup_root)
        if mem is None:
            mem = float(psutil.virtual_memory().percent)
        return Sample(cpu=cpu, memory=mem)
