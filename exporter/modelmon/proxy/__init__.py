"""Traffic in: the transparent reverse proxy in front of the model server.

- :mod:`.common`: what both engines share (hop-by-hop headers, request ids, upstream errors and
  the error body, the rate-limited log);
- :mod:`.fast`: the default engine, asyncio protocols on llhttp;
- :mod:`.aiohttp_engine`: the same proxy on aiohttp's server and client, a supported fallback
  (``proxy.engine: aiohttp``). The fast engine never imports it.
"""
