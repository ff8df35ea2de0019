"""System samples for the degradation manager: CPU and memory percentages.

By default (:class:`SystemSampler` with ``scope="service"``) they are this service's own:
the CPU time of its process tree (a gunicorn or uWSGI master with its workers) over the
CPUs it may use, and its memory over its limit. ``scope="container"`` and ``"host"``
read the cgroup's or the whole machine's figures instead: other programs' load then
counts as this service's. Cgroup files read: v2 ``cpu.max``, ``cpu.stat``,
``memory.max``/``memory.current``; v1 ``cpu.cfs_quota_us``, ``cpuacct.usage``,
``memory.limit_in_bytes``/``memory.usage_in_bytes``. :meth:`SystemSampler.prime` must run
once in the sampling thread before the first sample (CPU is a difference between two
readings; psutil keeps its host baseline per thread).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from ..exceptions import ConfigError
from ..model import Sample

__all__ = [
    "SCOPES",
    "Sample",
    "ServiceCpu",
    "SystemSampler",
    "cgroup_cpu_quota",
    "cgroup_cpu_usage",
    "cgroup_memory_percent",
    "service_root",
]

log = logging.getLogger(__name__)

#: cgroup v1 reports "no limit" as a huge number near 2**63
_V1_UNLIMITED = 1 << 60


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


#: server masters whose workers make up one service with them
_PREFORK_MASTERS = ("gunicorn", "uwsgi")


def service_root(process: psutil.Process | None = None) -> psutil.Process:
    """The process at the top of this service: the pre-fork master (gunicorn, uWSGI)
    when ``process`` (default: this one) is one of its workers, else ``process``."""
    me = process if process is not None else psutil.Process()
    try:
        parent = me.parent()
        if parent is not None and _is_master(parent):  # (PID 1 too: a container's CMD)
            return parent
    except (psutil.Error, OSError):
        pass
    return me


def _is_master(process: psutil.Process) -> bool:
    """Whether ``process`` runs a pre-fork server: its program (``.../bin/gunicorn``, or
    ``python .../gunicorn`` / ``python -m gunicorn``) or its process title
    (``gunicorn: master [...]``) names one."""
    argv = [a.lower() for a in process.cmdline()]
    if not argv:
        return False
    words = [os.path.basename(argv[0]), argv[0].split(":", 1)[0]]  # the program, a process title
    if words[0].startswith("python"):
        words += [os.path.basename(a) for a in argv[1:3] if not a.startswith("-")]
    return any(w == name or w.startswith(name + "-") for w in words for name in _PREFORK_MASTERS)


class ServiceCpu:
    """CPU time of one process tree (the service: a master and its workers, or one
    process and its children), as a share of the CPUs it may use, between two readings.

    A process started since the last reading (a forked worker, a child) counts whole: all
    its CPU time falls within the interval; one that exits takes its last interval with
    it.
    """

    def __init__(self, root: psutil.Process, cpus: float, clock: Callable[[], float]) -> None:
        self.root = root
        self.cpus = cpus
        self._clock = clock
        self._seen: dict[tuple[int, float], float] = {}
        self._at: float | None = None
        self._born_before = 0.0  # processes' create_time at the last reading (see _created_now)
        #: resident memory of the tree, in bytes, at the last reading (shared pages count
        #: once per process)
        self.last_rss = 0

    def _read(self) -> tuple[dict[tuple[int, float], float], int]:
        """One walk of the tree: each process's CPU seconds, by (pid, start time), and
        their resident memory in all."""
        times: dict[tuple[int, float], float] = {}
        rss = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except (psutil.Error, OSError):
            procs = []
        for p in procs:
            try:
                with p.oneshot():  # (one read of /proc/<pid>/stat for all three)
                    t = p.cpu_times()
                    times[(p.pid, p.create_time())] = t.user + t.system
                    rss += p.memory_info().rss
            except (psutil.Error, OSError):  # gone between the listing and the reading
                continue
        return times, rss

    def prime(self) -> None:
        self._born_before = _created_now()
        self._seen, self.last_rss = self._read()
        self._at = self._clock()

    def percent(self) -> float:
        """CPU in percent since the last reading; also refreshes :attr:`last_rss`."""
        born = _created_now()
        (times, self.last_rss), now = self._read(), self._clock()
        seen, at, since = self._seen, self._at, self._born_before
        self._seen, self._at, self._born_before = times, now, born
        if at is None or now <= at:
            return 0.0  # no baseline yet: the next interval tells
        used = 0.0
        for key, t in times.items():
            if key in seen:
                used += max(0.0, t - seen[key])
            elif key[1] >= since:  # started within the interval: all of it is the interval's
                used += t
        return min(100.0, 100.0 * used / ((now - at) * self.cpus))


def _created_now() -> float:
    """Now, as a process's ``create_time`` would say it: psutil derives those from the
    boot time (whole seconds on Linux) plus clock ticks since boot, so comparing them with
    ``time.time()`` could be a second off; less a tick, for the ticks' rounding."""
    try:
        with open("/proc/uptime") as f:
            return float(psutil.boot_time()) + float(f.read().split()[0]) - 0.02
    except (OSError, ValueError, IndexError):  # not Linux
        return time.time() - 0.02


#: the scopes a :class:`SystemSampler` reads
SCOPES = ("service", "container", "host", "process")
#: what the old ``cpu=`` argument called them
_OLD_NAMES = {"auto": "container", "host": "host", "process": "process"}


class SystemSampler:
    """Callable returning a :class:`Sample` of this service, its container or the host.

    ``scope`` decides whose CPU and memory are read:

    * ``"service"`` (the default): the CPU time of this service's process tree (under
      gunicorn or uWSGI the master and all its workers, else this process and its
      children) over the CPUs it may use (a cgroup CPU quota, else the CPUs of its
      affinity mask, else the host's count), and its resident memory over its memory
      limit (the cgroup's, else the host's total). Other programs on the host do not
      count: a busy neighbour does not make this service overloaded (if it starves the
      service, the service's queueing delay shows it).
    * ``"container"``: the cgroup's use over its CPU quota and memory limit, else the
      busy time of the CPUs the process may run on, else the host's (what every process
      in the container, or on the host, does).
    * ``"host"``: the whole host's CPU and memory.
    * ``"process"``: this process alone, as a share of all the machine's CPUs.

    :param cgroup_root: where to look for cgroup files (tests pass a temp dir).
    :param clock: monotonic seconds, for the CPU used per interval.
    :param cpu: the old name of ``scope`` (``"auto"`` was ``"container"``).
    """

    def __init__(
        self,
        cgroup_root: Path | str = Path("/sys/fs/cgroup"),
        *,
        scope: str = "service",
        clock: Callable[[], float] = time.monotonic,
        cpu: str | None = None,
    ) -> None:
        if not isinstance(cgroup_root, (str, Path)):
            raise ConfigError("cgroup_root", cgroup_root, "must be a path")
        if cpu is not None:
            if cpu not in _OLD_NAMES:
                raise ConfigError("cpu", cpu, "must be 'auto', 'host' or 'process'", hint="use scope=")
            scope = _OLD_NAMES[cpu]
        if scope not in SCOPES:
            raise ConfigError("scope", scope, f"must be one of {', '.join(map(repr, SCOPES))}")
        self.cgroup_root = Path(cgroup_root)
        #: whose CPU and memory are read (see the class docstring)
        self.scope = scope
        self._clock = clock
        quota = cgroup_cpu_quota(self.cgroup_root) if scope in ("service", "container") else None
        self._quota = quota if scope == "container" else None
        #: the CPUs read when the process may run on only some of them (``None``: all)
        self.cpus = _allowed_cpus() if scope == "container" and quota is None else None
        self._last_usage: tuple[float, float] | None = None
        self._process = psutil.Process() if scope == "process" else None
        self._service: ServiceCpu | None = None
        if scope == "service":
            allowed = _allowed_cpus()
            count = quota or (len(allowed) if allowed else (psutil.cpu_count() or 1))
            self._service = ServiceCpu(service_root(), float(count), clock)

    @property
    def cpu_source(self) -> str:
        """What the CPU figure is, in words (for the dashboard and ``/readyz``)."""
        if self._service is not None:
            return f"service (pid {self._service.root.pid} and its children, over {self._service.cpus:g} CPUs)"
        if self._quota is not None:
            return f"container (cgroup quota of {self._quota:g} CPUs)"
        if self.cpus is not None:
            return f"container (CPUs {','.join(map(str, self.cpus))})"
        return "process" if self._process is not None else "host"

    def prime(self) -> None:
        """Take the CPU baseline in the calling thread (psutil's first reading is 0.0,
        and cgroup use is a difference between two readings)."""
        if self._service is not None:
            self._service.prime()
        elif self._quota is not None:
            usage = cgroup_cpu_usage(self.cgroup_root)
            self._last_usage = None if usage is None else (usage, self._clock())
        elif self._process is not None:
            self._process.cpu_percent(interval=None)
        elif self.cpus is not None:
            psutil.cpu_percent(interval=None, percpu=True)
        else:
            psutil.cpu_percent(interval=None)

    def cpu_percent(self) -> float:
        """CPU in percent, by the scope chosen (see the class docstring)."""
        if self._service is not None:
            return self._service.percent()
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

    def memory_percent(self) -> float:
        """Memory in percent, by the scope chosen."""
        if self.scope == "host":
            return float(psutil.virtual_memory().percent)
        limited = cgroup_memory_percent(self.cgroup_root)
        if self._service is not None:
            if limited is not None:  # the container is the service's: its own limit
                return limited
            # (read with the CPU, in the same walk of the tree: the sampler reads CPU first)
            return min(100.0, 100.0 * self._service.last_rss / psutil.virtual_memory().total)
        return limited if limited is not None else float(psutil.virtual_memory().percent)

    def __call__(self) -> Sample:
        return Sample(cpu=self.cpu_percent(), memory=self.memory_percent())
