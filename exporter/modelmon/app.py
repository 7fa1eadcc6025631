"""Wiring: the Sidecar object owns the shared state; the listeners serve it.

- the traffic listener (proxy mode), by ``proxy.engine``: ``fast``, the asyncio/llhttp proxy
  of :mod:`modelmon.proxy.fast`; or ``aiohttp``, a low-level aiohttp server whose only handler
  is the proxy, so no router or middleware sits on the inference path;
- the admin listener: ``/metrics``, ``/healthz``, ``/readyz``, ``/`` and the push API.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric

from . import __version__
from . import catalogue as cat
from .analysis import Analysis, AnalysisCollector
from .auth import AuthCollector, BearerAuth, Handler
from .config import Config
from .exposition import MetricsEndpoint, SliceStats, run_in_slices
from .fds import ADMIN_CONNECTIONS, ADMIN_KEEPALIVE_SECONDS, CappedTCPSite, raise_fd_limit
from .health import HealthCollector, HealthState, every, probe_http, probe_tcp
from .ingest import IngestEndpoints
from .labels import PerformanceCollector
from .logs import withhold_request_details
from .models import ModelCollector, ModelRegistry
from .pipeline import Analyser, AnalysisQueue, PipelineCollector, PipelineStats
from .proxy.aiohttp_engine import Proxy
from .proxy.common import log as proxy_log
from .proxy.fast import FastProxy
from .resources import ModelProcessFinder, ResourceCollector, ResourceReader
from .routes import RouteTable
from .traffic import TrafficCollector, TrafficStats

log = logging.getLogger("modelmon")

LANDING_PAGE = """<!doctype html>
<html><head><title>modelmon</title></head>
<body><h1>modelmon {version}</h1>
<p>Monitoring sidecar for {upstream}.</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="/healthz">/healthz</a> &mdash; liveness of the sidecar</li>
<li><a href="/readyz">/readyz</a> &mdash; readiness (model server reachable)</li>
<li>POST /v1/records &mdash; push records for analysis</li>
<li>POST /v1/labels &mdash; push ground-truth labels for predictions</li>
</ul></body></html>
"""


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
            _IngestCollector(self.ingest), AnalysisCollector(self.analysis),
            PerformanceCollector(self.analysis.performances, self.analysis.buffer,
                                 self.analysis.label_stats),
        ):
            self.registry.register(collector)
        if self.auth is not None:
            self.registry.register(AuthCollector(self.auth))
        if self.analysis.drift_models:
            from .drift.service import DriftCollector

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
            jobs = [(self.config.resources.interval_seconds, self.read_resources, "resource readings"),
                    (HEAP_TRIM_SECONDS, self.trim_heap, "heap trim")]
            if up.url is not None:
                jobs.append((up.probe_interval_seconds, self.probe_upstream, "upstream probe"))
            if self.config.health.dependencies:
                jobs.append((self.config.health.interval_seconds, self.probe_dependencies,
                             "dependency probes"))
            if self.analysis.drift_models:
                jobs.append((self.config.drift.interval_seconds, self.compute_drift, "drift computation"))
            for interval, job, name in jobs:
                task = asyncio.create_task(every(interval, job, name), name=name)
                stack.push_async_callback(_cancel, task)
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
        # ~2.5 ms per 100 features, plus binning the queued rows: in slices, so that the proxy's
        # callbacks run between them.
        for monitor in list(self.analysis.drift_models.values()):
            await run_in_slices(monitor.compute_steps(), self.scoring_slices)
        self.analysis.expire()

    async def trim_heap(self) -> None:
        release_free_heap()

    async def read_resources(self) -> None:
        # Blocking reads in a thread; what they return is assigned here, on the loop.
        self.resources.snapshot = await asyncio.to_thread(self.resource_reader.read)
        self.models.trained.update(await asyncio.to_thread(self.models.read_trained))

    # --- listeners -----------------------------------------------------------------------

    def proxy(self) -> Proxy:
        up = self.config.upstream
        assert self.session is not None, "start() the sidecar first"
        assert up.url is not None, "no upstream configured"
        labels = self.config.labels
        return Proxy(up.url, self.session, self.routes, self.models, self.traffic, self.queue,
                     self.config.analysis.max_body_bytes, up.preserve_host,
                     labels.header if labels.generate_ids else None)

    def fast_proxy(self) -> FastProxy:
        """The traffic listener of the fast engine (not listening until ``start``)."""
        up = self.config.upstream
        assert up.url is not None, "no upstream configured"
        labels = self.config.labels
        return FastProxy(up.url, self.routes, self.models, self.traffic, self.queue,
                         self.config.analysis.max_body_bytes, up.preserve_host,
                         labels.header if labels.generate_ids else None,
                         max_connections=up.max_connections,
                         connect_timeout=up.connect_timeout_seconds,
                         read_timeout=up.read_timeout_seconds,
                         max_clients=self.config.proxy.max_connections,
                         head_timeout=self.config.proxy.request_head_timeout_seconds,
                         body_timeout=self.config.proxy.request_body_timeout_seconds,
                         request_buffering=self.config.proxy.request_buffering)

    def traffic_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        max_size = self.config.analysis.max_body_bytes

        def make_request(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
            # Only small inference bodies are ever read whole; the rest stream.
            return web.BaseRequest(message, payload, protocol, writer, task, loop,
                                   client_max_size=max_size)

        return web.Server(
            self.proxy().handle,
            request_factory=make_request,
            access_log=None,
            auto_decompress=False,  # bodies pass through exactly as the client encoded them
        )

    def admin_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.ingest.max_body_bytes)
        auth = self.auth

        def guard(group: str, path: str, handler: Handler) -> Handler:
            return handler if auth is None else auth.wrap(group, path, handler)

        app.router.add_get("/", guard("metrics", "/", self._landing))
        app.router.add_get("/metrics", guard("metrics", "/metrics", self.metrics.handle))
        app.router.add_get("/healthz", guard("health", "/healthz", self._healthz))
        app.router.add_get("/readyz", guard("health", "/readyz", self._readyz))
        # The push API checks the token itself, so that refusals count in its requests too.
        app.router.add_post("/v1/records", self.ingest.records)
        app.router.add_post("/v1/labels", self.ingest.labels)
        return app

    async def _landing(self, request: web.Request) -> web.Response:
        upstream = self.config.upstream.url or "pushed records (receive-only mode)"
        return web.Response(text=LANDING_PAGE.format(version=__version__, upstream=upstream),
                            content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs; records waiting while the analysis
        # hand-off drains none for analysis.stall_seconds is fatal too (a restart cures it).
        stalled = self.queue.stalled_for()
        if stalled > self.config.analysis.stall_seconds:
            return web.json_response({
                "status": "analysis stalled", "waiting": self.queue.depth(),
                "seconds_without_progress": round(stalled, 1)}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.health.upstream_configured:
            return web.json_response({"status": "ok", "upstream": None})
        result = self.health.upstream
        if result is None:
            await self.probe_upstream()
            result = self.health.upstream
        assert result is not None
        body = {"status": "ok" if result.up else "upstream unreachable",
                "upstream": self.config.upstream.url, "detail": result.detail}
        return web.json_response(body, status=200 if result.up else 503)


class _IngestCollector(cat.CatalogueCollector):
    owns = (cat.INGEST_REQUESTS,)

    def __init__(self, endpoint: IngestEndpoints) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        yield cat.INGEST_REQUESTS.of(self._endpoint.requests)


def _admin_refused() -> None:
    proxy_log.warning("admin_limit", "admin connection refused with 503: %d held already, each "
                      "with a request in progress (the admin port's cap)", ADMIN_CONNECTIONS)


class Listeners:
    """The admin and (with an upstream) traffic listeners of a started Sidecar. Port 0 binds
    a free port; ``admin_port``/``traffic_port`` tell which. As an async context manager it
    stops what it started, in reverse order: the traffic listener first (stop accepting, drain
    in-flight requests for the grace period), then the admin port."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._stack: contextlib.AsyncExitStack | None = None
        self.fast: FastProxy | None = None  # the traffic listener with proxy.engine: fast
        self.admin_port = 0
        self.traffic_port = 0

    async def __aenter__(self) -> Listeners:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        config = self._sidecar.config
        host, grace = config.server.host, config.server.shutdown_grace_seconds
        withhold_request_details()  # a malformed Authorization header must not reach the log
        # Idle keep-alive connections close after 75 s (aiohttp's client default; the server's
        # is an hour), so that a scraper's dropped connection does not hold a slot.
        admin = web.AppRunner(self._sidecar.admin_app(), access_log=None, shutdown_timeout=grace,
                              handle_signals=False, keepalive_timeout=ADMIN_KEEPALIVE_SECONDS)
        await admin.setup()
        stack.push_async_callback(admin.cleanup)
        await CappedTCPSite(admin, host, config.server.admin_port, on_refused=_admin_refused).start()
        self.admin_port = admin.addresses[0][1]
        log.info("admin listening on http://%s:%d (metrics, health, push API)", host, self.admin_port)
        if config.auth.token_file is None:
            log.warning("push API open: anyone who reaches the admin port can post records and "
                        "labels; set auth.token_file to require a bearer token")
        else:
            log.info("bearer token from %s required for: %s", config.auth.token_file,
                     ", ".join(config.auth.protect))
        if config.upstream.url is None:
            log.info("receive-only mode: no upstream, no proxy listener")
            return
        if config.proxy.engine == "fast":
            fast = self._sidecar.fast_proxy()
            await fast.start(host, config.server.traffic_port, backlog=1024)
            stack.push_async_callback(self._stop_fast, fast, grace)
            self.fast = fast
            self.traffic_port = fast.port
        else:
            traffic = web.ServerRunner(self._sidecar.traffic_server(), shutdown_timeout=grace,
                                       handle_signals=False)
            await traffic.setup()
            stack.push_async_callback(traffic.cleanup)
            await web.TCPSite(traffic, host, config.server.traffic_port, backlog=1024).start()
            self.traffic_port = traffic.addresses[0][1]
        log.info("proxying http://%s:%d -> %s (%s engine)", host, self.traffic_port,
                 config.upstream.url, config.proxy.engine)

    async def _stop_fast(self, fast: FastProxy, grace: float) -> None:
        await fast.stop(grace)
        self.fast = None

    async def stop(self) -> None:
        """Stop accepting, give in-flight requests the grace period, then close."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# How often the C heap's free pages are handed back to the OS (a millisecond or two each time).
HEAP_TRIM_SECONDS = 30.0


def freeze_start_up_objects() -> None:
    """Leave what start-up built (modules, config, profiles: ~55,000 objects) out of the cyclic
    garbage collector's full passes, which run on the event loop: over all of it a pass takes
    ~20 ms, over what is made later ~1-2 ms. Scrapes make many objects that outlive a few
    collections (the families of a rendering), so full passes come every few scrapes."""
    gc.collect()
    gc.freeze()


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc only): start-up (imports, config,
    profiles) and bursts of traffic leave MBs of freed memory that would otherwise stay
    resident, counted against the pod's memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run the sidecar until SIGTERM/SIGINT (or ``stop`` is set), then drain and exit."""
    stop = stop or asyncio.Event()
    raise_fd_limit()  # room for client connections beside the upstream pool (see fds.py)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        sidecar = await stack.enter_async_context(Sidecar(config))
        # unwound before the listeners stop: what they queued while draining is analysed
        stack.push_async_callback(sidecar.queue.join, min(config.server.shutdown_grace_seconds, 5.0))
        await stack.enter_async_context(Listeners(sidecar))
        freeze_start_up_objects()
        release_free_heap()
        await stop.wait()
        log.info("shutting down: draining in-flight requests (grace %.0fs)",
                 config.server.shutdown_grace_seconds)
    log.info("stopped")
