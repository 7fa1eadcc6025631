"""The fast proxy engine: an ``asyncio.Protocol`` HTTP/1.1 reverse proxy on llhttp (httptools).

Same behaviour and metrics as the aiohttp engine, at a fraction of the cost: no task, future or
stream object per request. Every request and response runs through parser callbacks:

- :class:`~.client.ClientConnection` (one per client connection, :mod:`.client`) parses
  requests with ``HttpRequestParser``; pipelined requests are answered strictly in order, one
  at a time;
- :class:`~.call.Call` (one per request, :mod:`.call`) carries the request to the upstream and
  the response back, streaming both bodies, and does the accounting when it is done;
- :class:`~.upstream.UpstreamConnection` (one per upstream connection, :mod:`.upstream`) parses
  responses with ``HttpResponseParser``; :class:`~.upstream.UpstreamPool` keeps them alive
  between requests, bounded by ``upstream.max_connections``;
- :class:`~.server.FastProxy` (:mod:`.server`) is the listener: settings, route cache, the
  sweep, the connection cap; :mod:`.wire` the limits and byte strings they share.

Connections and calls are handed what they use when they are made -- a :class:`~.shared.Shared`
(settings, pool, counters, queue, models, the route match, the connection registry) -- not a
reference back to the listener; the pool gets only the request id header it checks.

Writes made while a read is processed are gathered and sent in one ``writelines`` at its
end, so a small request or response goes out in one system call. Back-pressure: when one
side's write buffer is over its high-water mark, reading from the other side pauses (the
pause reasons, ``P_*`` in :mod:`.wire`, are flags: reading resumes when none is left). A sweep
(every second at most) applies the read timeout between reads and closes idle connections,
instead of a timer per request.

Monitoring fails open: route matching, labels, accounting and the analysis hand-off are
guarded so that nothing they raise reaches the connection handling.
"""

from .server import FastProxy

__all__ = ["FastProxy"]
