"""Health probes of the model server and its dependencies, and the periodic monitor that
refreshes probes, resource readings and model ages off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from prometheus_client.core import Metric

from ..config import DependencyConfig
from ..metrics import catalogue as cat
from ..metrics.instruments import counter_vec

log = logging.getLogger("modelmon.health")


@dataclass(frozen=True)
class ProbeResult:
    up: bool
    duration: float
    detail: str = ""


async def probe_http(session: aiohttp.ClientSession, url: str, timeout: float) -> ProbeResult:
    """GET ``url``; up when it answers 2xx or 3xx within ``timeout``."""
    start = time.perf_counter()
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            await resp.read()
            ok = resp.status < 400
            return ProbeResult(ok, time.perf_counter() - start, "" if ok else f"HTTP {resp.status}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return ProbeResult(False, time.perf_counter() - start, type(exc).__name__)


async def probe_tcp(host_port: str, timeout: float) -> ProbeResult:
    """Open and close a TCP connection to ``host:port``."""
    host, _, port = host_port.rpartition(":")
    start = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return ProbeResult(False, time.perf_counter() - start, type(exc).__name__)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, time.perf_counter() - start)


class HealthState:
    """Latest probe results, read by /readyz and the health collector."""

    def __init__(self, upstream_configured: bool, dependencies: tuple[DependencyConfig, ...]) -> None:
        self.upstream_configured = upstream_configured
        self.upstream: ProbeResult | None = None
        self.upstream_probes = counter_vec()  # (result,)
        self.dependencies: dict[str, ProbeResult] = {}
        self.dependency_configs = dependencies

    def record_upstream(self, result: ProbeResult) -> None:
        if self.upstream is not None and self.upstream.up != result.up:
            if result.up:
                log.info("upstream is up again")
            else:
                log.warning("upstream health probe failing: %s", result.detail)
        self.upstream = result
        self.upstream_probes[("success" if result.up else "failure",)] += 1


class HealthCollector(cat.CatalogueCollector):
    owns = (
        cat.UPSTREAM_UP,
        cat.UPSTREAM_PROBE_DURATION,
        cat.UPSTREAM_PROBES,
        cat.DEPENDENCY_UP,
        cat.DEPENDENCY_PROBE_DURATION,
    )

    def __init__(self, state: HealthState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state
        if s.upstream_configured:
            up = cat.UPSTREAM_UP.gauge()
            duration = cat.UPSTREAM_PROBE_DURATION.gauge()
            if s.upstream is not None:
                up.add_metric([], 1.0 if s.upstream.up else 0.0)
                duration.add_metric([], s.upstream.duration)
            yield up
            yield duration
            yield cat.UPSTREAM_PROBES.of(s.upstream_probes)
        dep_up = cat.DEPENDENCY_UP.gauge()
        dep_duration = cat.DEPENDENCY_PROBE_DURATION.gauge()
        for name, result in list(s.dependencies.items()):
            dep_up.add_metric([name], 1.0 if result.up else 0.0)
            dep_duration.add_metric([name], result.duration)
        yield dep_up
        yield dep_duration
