"""Memory and CPU of the model server's process, and cgroup memory usage and limit.

psutil is imported only when a model process is configured (``resources.pid_file`` or
``process_name``): the cgroup readings are plain file reads, and a sidecar that watches no
process does not carry the module (README, "Performance": RSS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from ..metrics import catalogue as cat

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("modelmon.resources")

# cgroup v1 reports "no limit" as a huge page-aligned number.
_V1_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    usage: int | None
    limit: int | None


@dataclass(frozen=True)
class ResourceSnapshot:
    process_up: bool = False
    rss_bytes: float = 0.0
    cpu_seconds: float = 0.0
    cgroups: dict[str, CgroupMemory] = field(default_factory=dict)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_dir(cgroup_root: str, proc_root: str, pid: int | str = "self") -> str | None:
    """The memory cgroup directory of ``pid`` under ``cgroup_root`` (v2 unified or v1 memory
    controller), or None if it is not visible from here."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # cgroup v2 unified hierarchy
            path = os.path.join(cgroup_root, rel.lstrip("/"))
            if os.path.exists(os.path.join(path, "memory.current")):
                return path
        elif "memory" in controllers.split(","):
            path = os.path.join(cgroup_root, "memory", rel.lstrip("/"))
            if os.path.exists(os.path.join(path, "memory.usage_in_bytes")):
                return path
    return None


def read_cgroup_memory(path: str) -> CgroupMemory:
    """Usage and limit from a v2 (memory.current/memory.max) or v1 cgroup directory."""
    if os.path.exists(os.path.join(path, "memory.current")):
        return CgroupMemory(_read_int(os.path.join(path, "memory.current")),
                            _read_int(os.path.join(path, "memory.max")))
    limit = _read_int(os.path.join(path, "memory.limit_in_bytes"))
    if limit is not None and limit >= _V1_NO_LIMIT:
        limit = None
    return CgroupMemory(_read_int(os.path.join(path, "memory.usage_in_bytes")), limit)


class ModelProcessFinder:
    """Finds the model server's process by pid file or by name/command line, and remembers it
    until it dies."""

    def __init__(self, pid_file: str | None, process_name: str | None) -> None:
        self._pid_file = pid_file
        self._name = process_name
        self._proc: psutil.Process | None = None

    @property
    def configured(self) -> bool:
        return bool(self._pid_file or self._name)

    def find(self) -> psutil.Process | None:
        if self._proc is not None and self._proc.is_running():
            return self._proc
        self._proc = self._lookup()
        return self._proc

    def _lookup(self) -> psutil.Process | None:
        import psutil

        if self._pid_file:
            try:
                with open(self._pid_file, encoding="ascii") as f:
                    return psutil.Process(int(f.read().strip()))
            except (OSError, ValueError, psutil.Error):
                return None
        if self._name:
            me = os.getpid()
            for proc in psutil.process_iter(["name", "cmdline"]):
                if proc.pid == me:
                    continue
                cmdline = " ".join(proc.info.get("cmdline") or ())
                if proc.info.get("name") == self._name or self._name in cmdline:
                    return proc
        return None


def process_tree_usage(proc: psutil.Process) -> tuple[float, float]:
    """(rss bytes, cpu seconds) of a process and its live children; reaped children's CPU
    is included through the parent's children_user/children_system times."""
    import psutil

    rss = 0.0
    cpu = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system
                if p is proc:
                    cpu += t.children_user + t.children_system
        except psutil.Error:
            continue
    return rss, cpu


class ResourceReader:
    def __init__(self, finder: ModelProcessFinder, cgroup_root: str, proc_root: str) -> None:
        self._finder = finder
        self._cgroup_root = cgroup_root
        self._proc_root = proc_root

    def read(self) -> ResourceSnapshot:
        """Blocking: run it off the event loop."""
        cgroups: dict[str, CgroupMemory] = {}
        own = cgroup_dir(self._cgroup_root, self._proc_root)
        if own is not None:
            cgroups["self"] = read_cgroup_memory(own)
        proc = self._finder.find() if self._finder.configured else None
        if proc is None:
            return ResourceSnapshot(cgroups=cgroups)
        import psutil  # loaded by find()

        try:
            rss, cpu = process_tree_usage(proc)
        except psutil.Error as exc:
            log.warning("model process %s vanished: %s", proc.pid, exc)
            return ResourceSnapshot(cgroups=cgroups)
        theirs = cgroup_dir(self._cgroup_root, self._proc_root, proc.pid)
        if theirs is not None and theirs != own:
            cgroups["model"] = read_cgroup_memory(theirs)
        return ResourceSnapshot(True, rss, cpu, cgroups)


class ResourceCollector(cat.CatalogueCollector):
    """Exports the latest ResourceSnapshot, which the health monitor refreshes off the loop."""

    owns = (
        cat.MODEL_PROCESS_UP,
        cat.MODEL_MEMORY_RSS,
        cat.MODEL_CPU,
        cat.CGROUP_MEMORY_USAGE,
        cat.CGROUP_MEMORY_LIMIT,
    )

    def __init__(self, process_configured: bool) -> None:
        self.snapshot = ResourceSnapshot()
        self._process_configured = process_configured

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if self._process_configured:
            up = cat.MODEL_PROCESS_UP.gauge()
            up.add_metric([], 1.0 if s.process_up else 0.0)
            yield up
            if s.process_up:
                rss = cat.MODEL_MEMORY_RSS.gauge()
                rss.add_metric([], s.rss_bytes)
                yield rss
                cpu = cat.MODEL_CPU.counter()
                cpu.add_metric([], s.cpu_seconds)
                yield cpu
        usage = cat.CGROUP_MEMORY_USAGE.gauge()
        limit = cat.CGROUP_MEMORY_LIMIT.gauge()
        for name, mem in s.cgroups.items():
            if mem.usage is not None:
                usage.add_metric([name], mem.usage)
            if mem.limit is not None:
                limit.add_metric([name], mem.limit)
        yield usage
        yield limit
