"""Dependency probes, model process and cgroup readings, model age."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from aiohttp.test_utils import TestServer
from conftest import StartSidecar
from modelmon.collectors.health import probe_tcp
from modelmon.collectors.models import ModelRegistry, artifact_mtime
from modelmon.collectors.resources import (
    CgroupMemory,
    ModelProcessFinder,
    ResourceReader,
    cgroup_dir,
    process_tree_usage,
    read_cgroup_memory,
)
from modelmon.config import ModelConfig


async def test_dependencies_http_and_tcp(upstream: TestServer, start_sidecar: StartSidecar) -> None:
    port = upstream.port
    running = await start_sidecar(None, health={"interval_seconds": 0.1, "dependency_timeout_seconds": 0.5,
                                                "dependencies": [
        {"name": "http-ok", "url": f"http://127.0.0.1:{port}/v2/health/ready"},
        {"name": "http-500", "url": f"http://127.0.0.1:{port}/status/500"},
        {"name": "tcp-ok", "tcp": f"127.0.0.1:{port}"},
        {"name": "tcp-down", "tcp": "127.0.0.1:1"},
    ]})
    await asyncio.sleep(0.3)
    up = {name: running.sample("modelmon_dependency_up", {"dependency": name})
          for name in ("http-ok", "http-500", "tcp-ok", "tcp-down")}
    assert up == {"http-ok": 1, "http-500": 0, "tcp-ok": 1, "tcp-down": 0}
    assert running.sample("modelmon_dependency_probe_duration_seconds", {"dependency": "tcp-ok"}) > 0


async def test_tcp_probe_refused_is_down_and_fast() -> None:
    result = await probe_tcp("127.0.0.1:1", 0.5)
    assert not result.up and result.duration < 0.5
    assert result.detail == "ConnectionRefusedError"


@pytest.fixture
def model_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 'model server' process that allocates ~50 MB and burns a little CPU."""
    code = ("import time; b = bytearray(50 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
            "t = time.process_time(); \nwhile time.process_time() - t < 0.2: pass\ntime.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, "modelmon-test-model"])
    pid_file = tmp_path / "model.pid"
    pid_file.write_text(str(proc.pid))
    time.sleep(0.8)
    yield proc, pid_file
    proc.kill()
    proc.wait()


def test_model_process_by_pid_file_matches_psutil(model_process) -> None:  # type: ignore[no-untyped-def]
    proc, pid_file = model_process
    finder = ModelProcessFinder(str(pid_file), None)
    found = finder.find()
    assert found is not None and found.pid == proc.pid
    rss, cpu = process_tree_usage(found)
    reference = psutil.Process(proc.pid)
    assert rss >= 50 * 1024 * 1024
    assert abs(rss - reference.memory_info().rss) < 5 * 1024 * 1024
    assert cpu >= 0.15


def test_model_process_by_name(model_process) -> None:  # type: ignore[no-untyped-def]
    proc, _ = model_process
    found = ModelProcessFinder(None, "modelmon-test-model").find()
    assert found is not None and found.pid == proc.pid
    assert ModelProcessFinder(None, "no-such-process-xyz").find() is None


async def test_resource_metrics_exported(model_process, start_sidecar: StartSidecar) -> None:  # type: ignore[no-untyped-def]
    proc, pid_file = model_process
    running = await start_sidecar(None, resources={"pid_file": str(pid_file), "interval_seconds": 0.1})
    await asyncio.sleep(0.4)
    assert running.sample("modelmon_model_process_up") == 1
    assert running.sample("modelmon_model_memory_rss_bytes") >= 50 * 1024 * 1024
    assert running.sample("modelmon_model_cpu_seconds_total") >= 0.15
    proc.kill()
    proc.wait()
    await asyncio.sleep(0.4)
    assert running.sample("modelmon_model_process_up") == 0
    assert running.sample("modelmon_model_memory_rss_bytes") is None


def test_cgroup_v2_reading(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = root / "kubepods" / "pod1" / "ctr"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("123456\n")
    (group / "memory.max").write_text("1073741824\n")
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("0::/kubepods/pod1/ctr\n")
    path = cgroup_dir(str(root), str(tmp_path / "proc"), 42)
    assert path == str(group)
    assert read_cgroup_memory(path) == CgroupMemory(123456, 1073741824)
    (group / "memory.max").write_text("max\n")
    assert read_cgroup_memory(path) == CgroupMemory(123456, None)


def test_cgroup_v1_reading(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = root / "memory" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.usage_in_bytes").write_text("2048\n")
    (group / "memory.limit_in_bytes").write_text(str(9223372036854771712))
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    path = cgroup_dir(str(root), str(tmp_path / "proc"))
    assert path == str(group)
    assert read_cgroup_memory(path) == CgroupMemory(2048, None)  # "unlimited" is no limit
    (group / "memory.limit_in_bytes").write_text("536870912")
    assert read_cgroup_memory(path).limit == 536870912


def test_own_cgroup_on_this_machine_agrees_with_the_kernel() -> None:
    path = cgroup_dir("/sys/fs/cgroup", "/proc")
    if path is None:
        pytest.skip("no memory cgroup visible on this machine")
    reading = ResourceReader(ModelProcessFinder(None, None), "/sys/fs/cgroup", "/proc").read()
    assert reading.cgroups["self"].usage is not None and reading.cgroups["self"].usage > 0


def test_artifact_mtime_file_and_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights = model_dir / "weights.bin"
    weights.write_bytes(b"x")
    os.utime(weights, (1_700_000_000, 1_700_000_000))
    os.utime(model_dir, (1_600_000_000, 1_600_000_000))
    assert artifact_mtime(str(weights)) == 1_700_000_000
    assert artifact_mtime(str(model_dir)) == 1_700_000_000  # newest entry inside
    assert artifact_mtime(str(tmp_path / "missing")) is None


def test_trained_timestamp_config_beats_artifact(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    os.utime(weights, (1_700_000_000, 1_700_000_000))
    registry = ModelRegistry([
        ModelConfig("a", "1", trained_at="2026-01-01T00:00:00Z", artifact_path=str(weights)),
        ModelConfig("b", "2", artifact_path=str(weights)),
        ModelConfig("c", "3"),
    ], "a", 10)
    assert registry.trained == {"a": 1767225600.0, "b": 1_700_000_000}
    os.utime(weights, (1_800_000_000, 1_800_000_000))  # model reloaded
    registry.refresh_trained()
    assert registry.trained["b"] == 1_800_000_000


async def test_model_info_and_age_metrics(tmp_path: Path, start_sidecar: StartSidecar) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    running = await start_sidecar(None, models=[{"name": "churn", "version": "7",
                                                 "artifact_path": str(weights)}])
    assert running.sample("modelmon_model_info", {"model": "churn", "version": "7"}) == 1
    assert running.sample("modelmon_model_trained_timestamp_seconds", {"model": "churn"}) == \
        pytest.approx(weights.stat().st_mtime)
