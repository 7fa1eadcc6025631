"""The admin listener's endpoints: ``/metrics``, ``/healthz``, ``/readyz``, the landing page
``/``, and the push API (``POST /v1/records``, ``/v1/labels``), each behind the bearer token
when ``auth.protect`` names its group."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import __version__
from ..analysis.queue import AnalysisQueue
from ..collectors.health import HealthState
from ..config import Config
from ..metrics.exposition import MetricsEndpoint
from .auth import BearerAuth, Handler
from .push import IngestEndpoints

# /readyz asks a model that was not up again, at most this often (seconds).
READY_REPROBE_SECONDS = 1.0

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


class AdminEndpoints:
    """The handlers, given what they read when they are made."""

    def __init__(self, config: Config, metrics: MetricsEndpoint, queue: AnalysisQueue,
                 health: HealthState, probe_upstream: Callable[[], Awaitable[None]],
                 ingest: IngestEndpoints, auth: BearerAuth | None) -> None:
        self.config = config
        self._metrics = metrics
        self._queue = queue
        self._health = health
        self._probe_upstream = probe_upstream
        self._asked_at = -READY_REPROBE_SECONDS  # when /readyz last probed the upstream itself
        self._ingest = ingest
        self._auth = auth

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.ingest.max_body_bytes)
        auth = self._auth

        def guard(group: str, path: str, handler: Handler) -> Handler:
            return handler if auth is None else auth.wrap(group, path, handler)

        app.router.add_get("/", guard("metrics", "/", self._landing))
        app.router.add_get("/metrics", guard("metrics", "/metrics", self._metrics.handle))
        app.router.add_get("/healthz", guard("health", "/healthz", self._healthz))
        app.router.add_get("/readyz", guard("health", "/readyz", self._readyz))
        # The push API checks the token itself, so that refusals count in its requests too.
        app.router.add_post("/v1/records", self._ingest.records)
        app.router.add_post("/v1/labels", self._ingest.labels)
        return app

    async def _landing(self, request: web.Request) -> web.Response:
        upstream = self.config.upstream.url or "pushed records (receive-only mode)"
        return web.Response(text=LANDING_PAGE.format(version=__version__, upstream=upstream),
                            content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs; records waiting while the analysis
        # hand-off drains none for analysis.stall_seconds is fatal too (a restart cures it).
        stalled = self._queue.stalled_for()
        if stalled > self.config.analysis.stall_seconds:
            return web.json_response({
                "status": "analysis stalled", "waiting": self._queue.depth(),
                "seconds_without_progress": round(stalled, 1)}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self._health.upstream_configured:
            return web.json_response({"status": "ok", "upstream": None})
        result = self._health.upstream
        # Not up: ask again now rather than wait for the next periodic probe. A model that
        # starts after the sidecar (a native sidecar always starts first) is ready at the
        # kubelet's next readiness probe, not up to upstream.probe_interval_seconds later. At
        # most one probe a second, whoever calls.
        now = time.monotonic()
        if result is None or (not result.up and now - self._asked_at >= READY_REPROBE_SECONDS):
            self._asked_at = now  # before the await: concurrent calls do not all probe
            await self._probe_upstream()
            result = self._health.upstream
        assert result is not None
        body = {"status": "ok" if result.up else "upstream unreachable",
                "upstream": self.config.upstream.url, "detail": result.detail}
        return web.json_response(body, status=200 if result.up else 503)
