"""SIGTERM: stop accepting, finish in-flight requests within the grace period, exit 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from helpers import free_port, start_modelmon, stop, wait_http

pytestmark = pytest.mark.engines  # both proxy engines


async def test_sigterm_drains_in_flight_requests(upstream: TestServer, tmp_path: Path, engine: str) -> None:
    traffic, admin = free_port(), free_port()
    log = tmp_path / "sidecar.log"
    proc = start_modelmon("serve", "--upstream", str(upstream.make_url("")).rstrip("/"),
                          "--host", "127.0.0.1", "--traffic-port", str(traffic),
                          "--admin-port", str(admin), log=log,
                          env={"MODELMON_PROXY__ENGINE": engine})
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/healthz", 20, proc)
        async with aiohttp.ClientSession() as session:

            async def slow_call() -> tuple[int, dict]:  # type: ignore[type-arg]
                async with session.post(f"http://127.0.0.1:{traffic}/slow?delay=1.5") as resp:
                    return resp.status, await resp.json()

            calls = [asyncio.create_task(slow_call()) for _ in range(10)]
            await asyncio.sleep(0.5)  # all ten are in flight at the upstream
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # New connections are refused while the old ones drain.
            async with aiohttp.ClientSession() as fresh:
                try:
                    async with fresh.get(f"http://127.0.0.1:{traffic}/status/200"):
                        refused = False
                except aiohttp.ClientConnectionError:
                    refused = True
            results = await asyncio.gather(*calls)
        assert refused
        assert results == [(200, {"slept": True})] * 10  # nothing in flight was lost
        exit_code = await asyncio.to_thread(proc.wait, 10)
        assert exit_code == 0
        text = log.read_text()
        assert "draining in-flight requests" in text and "stopped" in text
    finally:
        stop(proc)


async def test_grace_period_bounds_shutdown(upstream: TestServer, tmp_path: Path, engine: str) -> None:
    traffic, admin = free_port(), free_port()
    proc = start_modelmon("serve", "--upstream", str(upstream.make_url("")).rstrip("/"),
                          "--host", "127.0.0.1", "--traffic-port", str(traffic),
                          "--admin-port", str(admin), log=tmp_path / "sidecar.log",
                          env={"MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS": "1.5",
                               "MODELMON_PROXY__ENGINE": engine})
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/healthz", 20, proc)
        async with aiohttp.ClientSession() as session:
            call = asyncio.create_task(session.get(f"http://127.0.0.1:{traffic}/slow?delay=30"))
            await asyncio.sleep(0.3)
            loop = asyncio.get_running_loop()
            start = loop.time()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 40)
            took = loop.time() - start
            call.cancel()
        # the 30 s request is cut off at the 1.5 s grace period, not awaited
        assert 1.5 <= took < 6
    finally:
        stop(proc)


async def test_listeners_that_fail_to_start_stop_what_they_started(engine: str | None) -> None:
    """The traffic port is taken: entering the listeners fails, and the admin port they had
    already opened is closed again (nothing left listening); the sidecar's jobs stop on exit."""
    import socket

    from conftest import sidecar_config
    from modelmon.sidecar.listeners import Listeners
    from modelmon.sidecar.state import Sidecar
    from prometheus_client import CollectorRegistry

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    admin_port = free_port()
    config = sidecar_config("http://127.0.0.1:1", engine, server={
        "host": "127.0.0.1", "traffic_port": taken.getsockname()[1], "admin_port": admin_port})
    try:
        async with Sidecar(config, CollectorRegistry()) as sidecar:
            jobs = {t.get_name() for t in asyncio.all_tasks()} & {"upstream probe", "heap trim"}
            assert jobs == {"upstream probe", "heap trim"}
            with pytest.raises(OSError):
                async with Listeners(sidecar):
                    pass
            with socket.socket() as again:  # released: it binds
                again.bind(("127.0.0.1", admin_port))
        await asyncio.sleep(0)
        assert not {t.get_name() for t in asyncio.all_tasks()} & {"upstream probe", "heap trim"}
        assert sidecar.session is None
    finally:
        taken.close()


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        proc = start_modelmon("serve", "--no-upstream", "--host", "127.0.0.1", "--admin-port",
                              str(taken.getsockname()[1]), log=tmp_path / "log")
        assert proc.wait(30) == 2
        out = (tmp_path / "log").read_text()
        assert "Traceback" not in out
        assert "modelmon serve: cannot start: " in out and "server.admin_port" in out, out
    finally:
        taken.close()
