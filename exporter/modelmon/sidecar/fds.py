"""File descriptors: the process limit, and how many client connections fit under it.

Every client connection, upstream connection, admin-port connection, probe and open file costs
one descriptor. At the limit ``accept()`` and ``connect()`` fail (``EMFILE``), so a flood of
client connections would leave no room for the upstream pool: every call would fail with
``502 connect``. The proxy therefore holds at most as many client connections as fit beside
the upstream pool and a reserve for everything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from aiohttp import web

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

log = logging.getLogger("modelmon")

# Descriptors kept for the admin port's connections, listening sockets, probes, logs and files.
RESERVE = 128


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as nginx, Envoy and Go programs do;
    returns the soft limit now in force (-1: unlimited or not POSIX)."""
    if resource is None:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, exc)
    return -1 if soft == resource.RLIM_INFINITY else soft


def client_connection_limit(configured: int, upstream_connections: int) -> int:
    """``configured``, lowered so that that many client connections, the upstream pool and
    :data:`RESERVE` fit under the soft RLIMIT_NOFILE (at least 1)."""
    if resource is None:
        return configured
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(1, soft - upstream_connections - RESERVE)
    if room < configured:
        log.warning("proxy.max_connections lowered from %d to %d: the file descriptor limit is %d "
                    "(%d kept for upstream.max_connections, %d for the admin port and files)",
                    configured, room, soft, upstream_connections, RESERVE)
        return room
    return configured


# Admin-port connections held at once (Prometheus keeps one per scraper): part of RESERVE, so
# that a flood of them cannot take the descriptors the proxy counts on.
ADMIN_CONNECTIONS = 64
ADMIN_KEEPALIVE_SECONDS = 75.0

_ADMIN_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                  b"Retry-After: 1\r\nContent-Length: 33\r\nConnection: close\r\n\r\n"
                  b'{"error": "too many connections"}')


class _Refuse(asyncio.Protocol):
    """A connection over the admin port's cap: told 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(_ADMIN_REFUSED)
        transport.close()


class CappedTCPSite(web.TCPSite):
    """aiohttp's TCP site holding at most ``limit`` connections at once. At the limit the oldest
    connection without a request in progress (idle, or still sending its head) is closed to
    make room, as on the traffic port; if every one has a request in progress the newcomer gets
    ``503`` with ``Retry-After: 1`` and is closed (``on_refused`` is called). So idle
    connections cannot lock scrapes and health probes out."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limit: int = ADMIN_CONNECTIONS,
                 on_refused: Callable[[], None] | None = None) -> None:
        super().__init__(runner, host, port)
        self.limit = limit
        self._on_refused = on_refused

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would bind it too
        server = self._runner.server
        assert server is not None

        closing: set[asyncio.BaseTransport] = set()  # evicted, their connection_lost still due

        def factory() -> asyncio.BaseProtocol:
            connections = server._connections  # handler -> transport, oldest first (aiohttp's)
            closing.intersection_update(connections.values())
            if len(connections) - len(closing) >= self.limit:
                for handler, transport in connections.items():
                    # aiohttp's own field: the request being handled, None between requests
                    if handler._current_request is None and transport not in closing:
                        closing.add(transport)
                        transport.close()
                        break
                else:
                    if self._on_refused is not None:
                        self._on_refused()
                    return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]
