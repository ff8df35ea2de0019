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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from .exceptions import ConfigError

__all__ = ["Sample", "SystemSampler", "cgroup_cpu_quota", "cgroup_cpu_usage", "cgroup_memory_percent"]

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


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this cgroup may use (its quota / period), or ``None`` without a quota."""
    text = _read_text(root / "cpu.max")  # v2: "max 100000" or "200000 100000"
    if text is not None:
        quota, _, period = text.partition(" ")
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)
        return None
    quota_v1 = _read_int(root / "cpu" / "cpu.cfs_quota_us")
    period_v1 = _read_int(root / "cpu" / "cpu.cfs_period_us")
    if quota_v1 is not None and quota_v1 > 0 and period_v1:
        return quota_v1 / period_v1
    return None


def cgroup_cpu_usage(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU seconds this cgroup has used, or ``None`` if the files are not there."""
    stat = _read_text(root / "cpu.stat")  # v2: "usage_usec N" among others
    if stat is not None:
        for line in stat.splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec" and value.strip().isdigit():
                return int(value) / 1e6
    ns = _read_int(root / "cpuacct" / "cpuacct.usage")  # v1, nanoseconds
    return None if ns is None else ns / 1e9


def _allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on, when that is fewer than the host has."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return None
    return cpus if 0 < len(cpus) < (psutil.cpu_count() or 0) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class SystemSampler:
    """Callable returning a :class:`Sample` of this machine (or container).

    CPU is what the process's container sees: with a cgroup CPU quota, the cgroup's use
    over the last interval as a share of its quota (a throttled container reads near
    100 %, a noisy neighbour does not count); without one, the CPUs the process may run
    on (a cpuset, ``taskset`` or ``--cpuset-cpus``: the busy CPU it is pinned to reads
    100 %, not its share of the host), else the host's CPU (``cpu="host"`` forces the
    host; ``cpu="process"`` reads this process alone, as a share of all the machine's
    CPUs).

    :param cgroup_root: where to look for cgroup files (tests pass a temp dir).
    :param clock: monotonic seconds, for the CPU used per interval.
    """

    def __init__(
        self,
        cgroup_root: Path | str = Path("/sys/fs/cgroup"),
        *,
        cpu: str = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(cgroup_root, (str, Path)):
            raise ConfigError("cgroup_root", cgroup_root, "must be a path")
        if cpu not in ("auto", "host", "process"):
            raise ConfigError("cpu", cpu, "must be 'auto', 'host' or 'process'")
        self.cgroup_root = Path(cgroup_root)
        self.cpu_source = cpu
        self._clock = clock
        self._quota = cgroup_cpu_quota(self.cgroup_root) if cpu == "auto" else None
        #: the CPUs read when the process may run on only some of them (``None``: all)
        self.cpus = _allowed_cpus() if cpu == "auto" and self._quota is None else None
        self._last_usage: tuple[float, float] | None = None
        self._process = psutil.Process() if cpu == "process" else None

    def prime(self) -> None:
        """Take the CPU baseline in the calling thread (psutil's first reading is 0.0,
        and cgroup use is a difference between two readings)."""
        if self._quota is not None:
            usage = cgroup_cpu_usage(self.cgroup_root)
            self._last_usage = None if usage is None else (usage, self._clock())
        elif self._process is not None:
            self._process.cpu_percent(interval=None)
        elif self.cpus is not None:
            psutil.cpu_percent(interval=None, percpu=True)
        else:
            psutil.cpu_percent(interval=None)

    def cpu_percent(self) -> float:
        """CPU in percent, by the source chosen (see the class docstring)."""
        if self._quota is not None:
            usage = cgroup_cpu_usage(self.cgroup_root)
            now = self._clock()
            last, self._last_usage = self._last_usage, (None if usage is None else (usage, now))
            if usage is not None and last is not None and now > last[1]:
                return min(100.0, max(0.0, 100.0 * (usage - last[0]) / ((now - last[1]) * self._quota)))
            return 0.0  # no baseline yet: the next interval tells
        if self._process is not None:
            return float(self._process.cpu_percent(interval=None)) / (psutil.cpu_count() or 1)
        if self.cpus is not None:
            per_cpu = psutil.cpu_percent(interval=None, percpu=True)
            mine = [per_cpu[i] for i in self.cpus if i < len(per_cpu)]
            return float(sum(mine) / len(mine)) if mine else 0.0
        return float(psutil.cpu_percent(interval=None))

    def __call__(self) -> Sample:
        cpu = self.cpu_percent()
        mem = cgroup_memory_percent(self.cgroup_root)
        if mem is None:
            mem = float(psutil.virtual_memory().percent)
        return Sample(cpu=cpu, memory=mem)
