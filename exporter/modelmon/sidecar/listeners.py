"""The two listeners of a started sidecar -- the admin port, and with an upstream the traffic
port (the fast engine, or aiohttp's) -- and ``serve()``, which runs a sidecar until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config
from ..logs import withhold_request_details
from ..proxy.common import ProxyContext, ProxySettings
from ..proxy.common import log as proxy_log
from ..proxy.fast import FastProxy
from .fds import ADMIN_CONNECTIONS, ADMIN_KEEPALIVE_SECONDS, CappedTCPSite, raise_fd_limit
from .scheduler import release_free_heap
from .state import Sidecar

if TYPE_CHECKING:
    from ..proxy.aiohttp_engine import Proxy

log = logging.getLogger("modelmon")


def _context(sidecar: Sidecar) -> ProxyContext:
    return ProxyContext(sidecar.routes, sidecar.models, sidecar.traffic, sidecar.queue)


def _aiohttp_proxy(sidecar: Sidecar) -> Proxy:
    from ..proxy.aiohttp_engine import Proxy  # only with proxy.engine: aiohttp

    assert sidecar.session is not None, "start() the sidecar first"
    return Proxy(ProxySettings.of(sidecar.config), _context(sidecar), sidecar.session)


def fast_proxy(sidecar: Sidecar) -> FastProxy:
    """The traffic listener of the fast engine (not listening until ``start``)."""
    return FastProxy(ProxySettings.of(sidecar.config), _context(sidecar))


def aiohttp_server(sidecar: Sidecar) -> web.Server:
    """The traffic listener of the aiohttp engine: a low-level server whose only handler is the
    proxy, so no router or middleware sits on the inference path."""
    loop = asyncio.get_running_loop()
    max_size = sidecar.config.analysis.max_body_bytes

    def make_request(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        # Only small inference bodies are ever read whole; the rest stream.
        return web.BaseRequest(message, payload, protocol, writer, task, loop,
                               client_max_size=max_size)

    return web.Server(
        _aiohttp_proxy(sidecar).handle,
        request_factory=make_request,
        access_log=None,
        auto_decompress=False,  # bodies pass through exactly as the client encoded them
    )



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
        admin = web.AppRunner(self._sidecar.admin().app(), access_log=None, shutdown_timeout=grace,
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
            fast = fast_proxy(self._sidecar)
            await fast.start(host, config.server.traffic_port, backlog=1024)
            stack.push_async_callback(self._stop_fast, fast, grace)
            self.fast = fast
            self.traffic_port = fast.port
        else:
            traffic = web.ServerRunner(aiohttp_server(self._sidecar), shutdown_timeout=grace,
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


def freeze_start_up_objects() -> None:
    """Leave what start-up built (modules, config, profiles: tens of thousands of objects) out
    of the cyclic garbage collector's full passes, which run on the event loop: a pass over all
    of it takes an order of magnitude longer than one over what is made later. Scrapes make
    many objects that outlive a few collections (the families of a rendering), so full passes
    come every few scrapes."""
    gc.collect()
    gc.freeze()


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
        # unwound after the listeners have stopped (in reverse): what they queued while
        # draining is analysed before the sidecar closes
        stack.push_async_callback(sidecar.queue.join, min(config.server.shutdown_grace_seconds, 5.0))
        await stack.enter_async_context(Listeners(sidecar))
        freeze_start_up_objects()
        release_free_heap()
        await stop.wait()
        log.info("shutting down: draining in-flight requests (grace %.0fs)",
                 config.server.shutdown_grace_seconds)
    log.info("stopped")
