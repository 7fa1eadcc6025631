"""The fast engine's traffic listener: settings, the route cache, the sweep that applies
timeouts and closes idle connections, and the connection cap with eviction."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import cast
from urllib.parse import unquote, urlsplit

from ...sidecar.fds import client_connection_limit
from ..common import ProxyContext, ProxySettings, RequestIds, log
from ..routes import RouteMatch
from .client import ClientConnection
from .shared import Shared
from .upstream import UpstreamPool
from .wire import CLIENT_IDLE_SECONDS, CRLF, RECEIVING, ROUTE_CACHE_SIZE, logger, perf


class FastProxy:
    """The traffic listener of the fast engine."""

    def __init__(self, settings: ProxySettings, context: ProxyContext) -> None:
        url = urlsplit(settings.upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {settings.upstream!r}")
        self.routes = context.routes
        self.stats = context.stats
        id_header = settings.id_header.encode() if settings.id_header else None
        id_lower = id_header.lower() if id_header else None
        default_port = 443 if url.scheme == "https" else 80
        port = url.port or default_port
        hostport = url.hostname if port == default_port else f"{url.hostname}:{port}"
        if ":" in url.hostname:  # IPv6 literal
            hostport = f"[{url.hostname}]" if port == default_port else f"[{url.hostname}]:{port}"
        self.read_timeout = settings.read_timeout
        self.head_timeout = settings.head_timeout
        self.body_timeout = settings.body_timeout
        self.max_clients_configured = settings.max_clients
        self.max_clients = settings.max_clients  # fitted to the file descriptor limit in start()
        self.pool = UpstreamPool(id_lower, url.hostname, port,
                                 ssl.create_default_context() if url.scheme == "https" else None,
                                 settings.max_connections, settings.connect_timeout)
        self.clients: set[ClientConnection] = set()
        self.evicting = 0  # clients closed to make room whose connection_lost is still due
        # what each connection and call is given when it is made (the listener keeps only what
        # it uses itself: routes, counters, timeouts, the pool and the clients)
        self.shared = Shared(
            settings.preserve_host, id_header, id_lower, url.path.rstrip("/").encode(),
            b"Host: " + hostport.encode("idna") + CRLF, settings.request_buffering,
            settings.max_analysis_bytes, RequestIds(), context.models, context.stats, context.queue,
            self.pool, self.clients, self.match, self.admit, self.client_gone)
        self.address: tuple[str, int] = ("", 0)
        self._route_cache: dict[bytes, RouteMatch] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, self.read_timeout / 4, self.head_timeout / 4,
                                self.body_timeout / 4)
        self._all_closed: asyncio.Event | None = None

    # --- listening ---------------------------------------------------------------------------

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        self.max_clients = client_connection_limit(self.max_clients_configured, self.pool.limit)
        self.stats.client_connection_limit = self.max_clients
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientConnection(self.shared), host, port,
                                                backlog=backlog)
        sock = self._server.sockets[0]
        self.address = cast(tuple[str, int], sock.getsockname()[:2])
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    @property
    def port(self) -> int:
        return self.address[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, close idle
        keep-alive connections, then cut what is left."""
        self.shared.closing = True
        if self._server is not None:
            self._server.close()
        self._all_closed = asyncio.Event()
        for client in list(self.clients):
            if client.idle():
                client.close()
        if self.clients:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("shutdown", "%d connection(s) still busy after the %.1fs grace period: "
                            "closing them", len(self.clients), grace)
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.pool.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):  # connections are aborted already
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def admit(self, client: ClientConnection) -> bool:
        """Whether a new connection may stay: below the limit, or once another has been closed
        to make room -- the one silent longest among those whose request has not reached the
        upstream (idle, still sending its head, or still sending a body that is held here).
        Requests the upstream has seen are never cut for a newcomer."""
        if len(self.clients) - self.evicting < self.max_clients:
            return True
        victim: ClientConnection | None = None
        since = 0.0
        for other in self.clients:
            if other.evicted or other.waiting:
                continue
            active = other.active
            if active is None:
                other_since = other.idle_since
            elif active.phase == RECEIVING:
                other_since = other.last_read
            else:
                continue
            if victim is None or other_since < since:
                victim, since = other, other_since
        if victim is None:
            return False
        victim.evicted = True
        self.evicting += 1
        if victim.active is not None:  # its body was held here: the upstream never saw it
            victim.reject(503, "too many connections: request body too slow", "evicted",
                          b"Retry-After: 1\r\n")
        else:
            self.stats.connections_closed[("evicted",)] += 1
            victim.close()
        return True

    def client_gone(self, client: ClientConnection) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.stats.client_connections = len(self.clients)
            if client.evicted:
                self.evicting -= 1
        if self.shared.closing and not self.clients and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        """Read timeouts and idle connections, once every ``_sweep_every`` seconds."""
        now = perf()
        try:
            self.pool.sweep(now, self.read_timeout)
            limit = now - CLIENT_IDLE_SECONDS
            head_limit = now - self.head_timeout
            body_limit = now - self.body_timeout
            for client in list(self.clients):
                if client.head_since and client.head_since < head_limit and client.in_head:
                    client.head_timed_out()
                elif (client.parsing is not None and not client.in_head
                      and client.last_read < body_limit and not client.read.reasons):
                    # a body that stopped coming (not one we stopped reading)
                    client.reject(408, "request body not received in time", "body_timeout")
                elif client.idle() and client.idle_since < limit and not client.head_since:
                    client.close()
        except Exception:  # pragma: no cover - fail open, keep sweeping
            logger.exception("proxy sweep failed")
        if not self.shared.closing:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    # --- monitoring helpers (never raise) -----------------------------------------------------

    def match(self, target: bytes) -> RouteMatch:
        end = target.find(b"?")
        raw = target if end < 0 else target[:end]
        found = self._route_cache.get(raw)
        if found is None:
            if raw.startswith(b"/"):
                path = raw.decode("latin-1")
            elif raw == b"*":
                path = "*"
            else:  # absolute form: http://host/path
                path = urlsplit(raw.decode("latin-1")).path or "/"
            if "%" in path:
                path = unquote(path)
            found = self.routes.match(path)
            if len(self._route_cache) >= ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            self._route_cache[raw] = found
        return found


