"""The sidecar's state: everything the listeners share (routes, models, traffic counters, the
analysis queue and analysis, health, resources, auth, the push API, the metrics registry with
every collector beside the state it reads), and its lifecycle: the upstream pool, the analysis
hand-off and the background jobs, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import aiohttp
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric

from .. import __version__
from ..analysis.analyser import Analysis, AnalysisCollector
from ..analysis.queue import Analyser, AnalysisQueue, PipelineCollector, PipelineStats
from ..collectors.health import HealthCollector, HealthState, probe_http, probe_tcp
from ..collectors.models import ModelCollector, ModelRegistry
from ..collectors.resources import ModelProcessFinder, ResourceCollector, ResourceReader
from ..collectors.traffic import TrafficCollector, TrafficStats
from ..config import Config
from ..labels import PerformanceCollector
from ..metrics import catalogue as cat
from ..metrics.exposition import MetricsEndpoint, SliceStats, run_in_slices
from ..proxy.routes import RouteTable
from .admin import AdminEndpoints
from .auth import AuthCollector, BearerAuth
from .push import IngestCollector, IngestEndpoints
from .scheduler import HEAP_TRIM_SECONDS, Job, start_jobs, trim_heap

log = logging.getLogger("modelmon")


class BuildInfoCollector(cat.CatalogueCollector):
    owns = (cat.BUILD_INFO,)

    def collect(self) -> Iterator[Metric]:
        info = cat.BUILD_INFO.info()
        info.add_metric([], {"version": __version__})
        yield info


class Sidecar:
    """Everything the listeners share. As an async context manager (``start``/``close``) it
    opens the upstream connection pool, starts the analysis hand-off and the background jobs,
    and stops what it started, in reverse order."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # /metrics: rendered in slices on the loop, shared by scrapes close together.
        self.metrics = MetricsEndpoint(self.registry, config.server.metrics_share_seconds)
        self.scoring_slices = SliceStats()  # what the drift passes did (tests, benchmarks)
        self.models = ModelRegistry(config.models, config.default_model, config.limits.max_models)
        self.traffic = TrafficStats()
        self.queue = AnalysisQueue(config.analysis.queue_size, PipelineStats(),
                                   config.analysis.max_body_bytes)
        self.analysis = Analysis(config)
        self.analysers: list[Analyser] = [self.analysis]
        self.health = HealthState(config.upstream.url is not None, config.health.dependencies)
        finder = ModelProcessFinder(config.resources.pid_file, config.resources.process_name)
        self.resource_reader = ResourceReader(finder, config.resources.cgroup_root,
                                              config.resources.proc_root)
        self.resources = ResourceCollector(finder.configured)
        # Reads the token file: a missing or empty one is a ConfigError naming auth.token_file.
        self.auth = BearerAuth(config.auth) if config.auth.token_file is not None else None
        self.ingest = IngestEndpoints(config.ingest, self.models, self.queue, self.analysis, self.auth)
        self.routes = RouteTable(config.proxy.routes)
        self.session: aiohttp.ClientSession | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        for collector in (
            BuildInfoCollector(), TrafficCollector(self.traffic), PipelineCollector(self.queue),
            HealthCollector(self.health), self.resources, ModelCollector(self.models),
            IngestCollector(self.ingest), AnalysisCollector(self.analysis),
            PerformanceCollector(self.analysis.performances, self.analysis.buffer,
                                 self.analysis.label_stats),
        ):
            self.registry.register(collector)
        if self.auth is not None:
            self.registry.register(AuthCollector(self.auth))
        if self.analysis.drift_models:
            from ..drift.service import DriftCollector

            self.registry.register(DriftCollector(self.analysis.drift_models,
                                                  self.analysis.export_histograms,
                                                  self.analysis.export_reference))
        # The standard process_* and python_* families, under the names dashboards expect.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        up = self.config.upstream
        async with contextlib.AsyncExitStack() as stack:
            self.session = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=up.max_connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=up.connect_timeout_seconds, sock_read=up.read_timeout_seconds
                ),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # a proxy must not keep cookies between clients
            ))
            stack.callback(setattr, self, "session", None)
            self.queue.start(self.analysers)
            stack.callback(self.queue.stop)
            jobs = [Job(self.config.resources.interval_seconds, self.read_resources, "resource readings"),
                    Job(HEAP_TRIM_SECONDS, trim_heap, "heap trim")]
            if up.url is not None:
                jobs.append(Job(up.probe_interval_seconds, self.probe_upstream, "upstream probe"))
            if self.config.health.dependencies:
                jobs.append(Job(self.config.health.interval_seconds, self.probe_dependencies,
                                "dependency probes"))
            if self.analysis.drift_models:
                jobs.append(Job(self.config.drift.interval_seconds, self.compute_drift,
                                "drift computation"))
            start_jobs(jobs, stack)
            self._stack = stack.pop_all()  # started in full: close() unwinds it

    async def close(self) -> None:
        """Stop the background jobs and the hand-off, close the pool: the reverse of start."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def probe_upstream(self) -> None:
        up = self.config.upstream
        assert self.session is not None and up.url is not None
        url = up.url.rstrip("/") + up.health_path
        self.health.record_upstream(await probe_http(self.session, url, up.probe_timeout_seconds))

    async def probe_dependencies(self) -> None:
        assert self.session is not None
        timeout = self.config.health.dependency_timeout_seconds
        deps = self.config.health.dependencies
        results = await asyncio.gather(*(
            probe_http(self.session, d.url, timeout) if d.url else probe_tcp(d.tcp or "", timeout)
            for d in deps
        ))
        for dep, result in zip(deps, results, strict=True):
            self.health.dependencies[dep.name] = result

    async def compute_drift(self) -> None:
        # Milliseconds for a large profile (README, "Scrapes and drift scoring"), plus binning
        # the queued rows: in slices, so that the proxy's callbacks run between them.
        for monitor in list(self.analysis.drift_models.values()):
            await run_in_slices(monitor.compute_steps(), self.scoring_slices)
        self.analysis.expire()

    async def read_resources(self) -> None:
        # Blocking reads in a thread; what they return is assigned here, on the loop.
        self.resources.snapshot = await asyncio.to_thread(self.resource_reader.read)
        self.models.trained.update(await asyncio.to_thread(self.models.read_trained))

    def admin(self) -> AdminEndpoints:
        """The admin port's endpoints, given what they read."""
        return AdminEndpoints(self.config, self.metrics, self.queue, self.health, self.probe_upstream,
                              self.ingest, self.auth)
