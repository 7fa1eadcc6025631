"""Serving ``/metrics`` without holding up the proxy, which shares the admin port's event loop.

Whatever runs on the loop runs between two of the proxy's callbacks and delays every request
waiting behind it. A model with a 100-feature profile exports thousands of series, tens of
milliseconds to render in one go with prometheus_client's own handler (README, "Scrapes and
drift scoring", has the measurements). So here:

- **time slices**: a scrape is collected and formatted step by step (a family, or
  ``CHUNK_SAMPLES`` samples of one, per step) and the loop gets back whenever a slice has
  taken ``SLICE_SECONDS``: at most one slice sits between any two proxied callbacks. Drift
  scoring runs the same way (:func:`run_in_slices`);
- **collectors with much to build** offer ``collect_steps()``: their families, with ``None``
  wherever a scrape may pause (:func:`family_steps`); the others' ``collect()`` runs in one step;
- **families that never change** (:class:`FrozenFamily`: the reference profile's) are
  formatted once per exposition format and reused;
- **scrapes share renderings**: concurrent scrapes await the one in progress, and scrapes
  within ``share_seconds`` of a rendering's start get it (and its compressed form) again.

The formatting is prometheus_client's own encoders', family by family (so the output is what
``generate_latest`` gives, in every format ``choose_encoder`` negotiates); the compression is
aiohttp's (the same coding choice, and compressed in a thread, as ``enable_compression`` does).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.compression_utils import ZLibCompressor
from aiohttp.web_response import CONTENT_CODINGS
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

# How long one slice of work may keep the loop before giving it back (cooperative: a slice
# ends after the step that crosses this, so steps are kept short). The choice is measured in
# docs/architecture.md ("Decisions").
SLICE_SECONDS = 0.00025
# Samples formatted per step (a step of them stays short with prometheus_client's encoders).
CHUNK_SAMPLES = 32
# Renderings kept for scrapes that follow within share_seconds (per format and name[] filter).
MAX_RENDERINGS = 8

# Samples the text format moves out of their family (into gauges after it): a family that has
# them is formatted whole, never in chunks.
_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")


@dataclass
class SliceStats:
    """What :func:`run_in_slices` did: runs, slices (the loop got back between them), steps,
    and the longest slice in seconds."""

    runs: int = 0
    slices: int = 0
    steps: int = 0
    longest: float = 0.0


async def run_in_slices(steps: Iterable[object], stats: SliceStats | None = None,
                        budget: float | None = None) -> None:
    """Run ``steps`` (an iterator doing a bounded piece of work per item) on the event loop,
    giving the loop back once a slice has run ``budget`` seconds (default SLICE_SECONDS)."""
    limit = SLICE_SECONDS if budget is None else budget
    count = 0
    start = time.perf_counter()
    for _ in steps:
        count += 1
        now = time.perf_counter()
        if now - start >= limit:
            if stats is not None:
                stats.slices += 1
                stats.longest = max(stats.longest, now - start)
            await asyncio.sleep(0)  # one loop iteration: the proxy's ready callbacks run
            start = time.perf_counter()
    if stats is not None:
        stats.runs += 1
        stats.slices += 1
        stats.steps += count
        stats.longest = max(stats.longest, time.perf_counter() - start)


def run_now(steps: Iterable[object]) -> None:
    """Run ``steps`` to the end in one go (for callers off the proxy's loop, and tests)."""
    deque(steps, maxlen=0)


class FrozenFamily(Metric):
    """A family whose samples never change once built: formatted once per exposition format
    (by :class:`MetricsEndpoint`), then reused. Build the family, then freeze it."""

    def __init__(self, family: Metric) -> None:
        self.__dict__.update(family.__dict__)
        self.rendered: dict[str, bytes] = {}  # content type -> the family's exposition


def family_steps(registry: CollectorRegistry) -> Iterator[Metric | None]:
    """``registry.collect()``, with ``None`` where a collector's ``collect_steps()`` may pause.

    Walks the registry's collectors itself (prometheus_client has no public accessor for
    them); a registry it cannot walk, or one with target info, is collected as it is."""
    collectors = getattr(registry, "_collector_to_names", None)
    if not isinstance(collectors, dict) or registry.get_target_info():
        yield from registry.collect()
        return
    for collector in list(collectors):
        steps = getattr(collector, "collect_steps", None)
        yield from steps() if callable(steps) else collector.collect()


class _Families:
    """What the encoders take: something with ``collect()``."""

    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


Encoder = Callable[[Any], bytes]


def _restricted(family: Metric, names: frozenset[str]) -> Metric | None:
    """The family with only the samples named in ``names`` (as prometheus_client's
    ``RestrictedRegistry`` serves ``?name[]=...``)."""
    samples = [s for s in family.samples if s.name in names]
    if not samples:
        return None
    restricted = Metric(family.name, family.documentation, family.type)
    restricted.samples = samples
    return restricted


def format_steps(registry: CollectorRegistry, encoder: Encoder, content_type: str,
                 names: frozenset[str] | None, out: list[bytes]) -> Iterator[None]:
    """Append the registry's exposition to ``out`` a step at a time: what ``encoder(registry)``
    gives (``names``: only those samples, as ``?name[]=``)."""
    trailer = encoder(_Families())  # what the format ends with ("# EOF\n" for OpenMetrics)
    for family in family_steps(registry):
        if family is None:
            yield
            continue
        if names is not None:
            family = _restricted(family, names)
            if family is None:
                continue
        elif isinstance(family, FrozenFamily):
            done = family.rendered.get(content_type)
            if done is None:
                parts: list[bytes] = []
                yield from _format_family(family, encoder, trailer, parts)
                done = family.rendered[content_type] = b"".join(parts)
            out.append(done)
            yield
            continue
        yield from _format_family(family, encoder, trailer, out)
    out.append(trailer)


def _format_family(family: Metric, encoder: Encoder, trailer: bytes,
                   out: list[bytes]) -> Iterator[None]:
    samples = family.samples
    cut = len(trailer)
    moved = {family.name + suffix for suffix in _MOVED_SUFFIXES}
    if len(samples) <= CHUNK_SAMPLES or any(s.name in moved for s in samples):
        out.append(encoder(_Families(family))[:-cut or None])
        yield
        return
    # Chunks of samples, each formatted as the family; all but the first lose the header.
    part = copy.copy(family)
    part.samples = []
    header = encoder(_Families(part))[:-cut or None]
    for start in range(0, len(samples), CHUNK_SAMPLES):
        part.samples = samples[start:start + CHUNK_SAMPLES]
        text = encoder(_Families(part))[:-cut or None]
        if not text.startswith(header):  # never seen; stay exact rather than fast
            del out[len(out) - start // CHUNK_SAMPLES:]
            out.append(encoder(_Families(family))[:-cut or None])
            yield
            return
        out.append(text if start == 0 else text[len(header):])
        yield


class _Rendering:
    """One rendering of the registry in one format, and its compressed forms."""

    def __init__(self, body: bytes, started: float) -> None:
        self.body = body
        self.started = started
        self._encoded: dict[str, asyncio.Future[bytes]] = {}

    async def encoded(self, coding: str) -> bytes:
        if coding == "identity":
            return self.body
        future = self._encoded.get(coding)
        if future is None:
            future = self._encoded[coding] = asyncio.ensure_future(self._compress(coding))
        return await asyncio.shield(future)

    async def _compress(self, coding: str) -> bytes:
        # As aiohttp's Response.enable_compression: bodies above 4 KiB compress in a thread.
        compressor = ZLibCompressor(encoding=coding)
        return await compressor.compress(self.body) + compressor.flush()


def content_coding(request: web.BaseRequest) -> str:
    """The coding aiohttp's ``enable_compression`` picks for the request: the first of deflate,
    gzip named in Accept-Encoding, else identity."""
    accept_encoding = request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
    for value in CONTENT_CODINGS:
        if value in accept_encoding:
            return value
    return "identity"


class MetricsEndpoint:
    """``GET /metrics``: prometheus_client's aiohttp handler (same content negotiation, same
    ``?name[]=`` filter, same compression), rendered in slices and shared between scrapes.

    ``share_seconds``: scrapes that arrive within this long of the start of a rendering (in the
    same format, with the same filter) get that rendering; 0: only concurrent scrapes share."""

    def __init__(self, registry: CollectorRegistry, share_seconds: float = 1.0,
                 disable_compression: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._share = share_seconds
        self._compress = not disable_compression
        self._clock = clock
        self._renderings: dict[tuple[str, frozenset[str] | None], _Rendering] = {}
        self._in_progress: dict[tuple[str, frozenset[str] | None], asyncio.Future[_Rendering]] = {}
        self.renders = 0  # renderings made
        self.slices = SliceStats()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = frozenset(request.query.getall("name[]")) if "name[]" in request.query else None
        rendering = await self._rendering(encoder, content_type, names)
        coding = content_coding(request) if self._compress else "identity"
        headers = {hdrs.CONTENT_TYPE: content_type}
        if coding != "identity":
            headers[hdrs.CONTENT_ENCODING] = coding
        return web.Response(body=await rendering.encoded(coding), headers=headers)

    async def _rendering(self, encoder: Encoder, content_type: str,
                         names: frozenset[str] | None) -> _Rendering:
        key = (content_type, names)
        now = self._clock()
        done = self._renderings.get(key)
        if done is not None and now - done.started < self._share:
            return done
        future = self._in_progress.get(key)
        if future is None:
            future = self._in_progress[key] = asyncio.ensure_future(
                self._render(key, encoder, now))
            future.add_done_callback(lambda _: self._in_progress.pop(key, None))
        # Shielded: a scraper that goes away does not cancel the others' rendering.
        return await asyncio.shield(future)

    async def _render(self, key: tuple[str, frozenset[str] | None], encoder: Encoder,
                      started: float) -> _Rendering:
        self.renders += 1
        parts: list[bytes] = []
        await run_in_slices(format_steps(self._registry, encoder, key[0], key[1], parts),
                            self.slices)
        rendering = _Rendering(b"".join(parts), started)
        if self._share > 0:
            self._renderings.pop(key, None)
            self._renderings[key] = rendering
            while len(self._renderings) > MAX_RENDERINGS:  # the oldest go first
                del self._renderings[next(iter(self._renderings))]
            # Not kept past its time: for a large model a rendering and its gzip are large.
            asyncio.get_running_loop().call_later(self._share, self._forget, key, rendering)
        return rendering

    def _forget(self, key: tuple[str, frozenset[str] | None], rendering: _Rendering) -> None:
        if self._renderings.get(key) is not rendering:
            return
        left = rendering.started + self._share - self._clock()
        if left > 0:  # by this endpoint's clock, not yet
            asyncio.get_running_loop().call_later(left, self._forget, key, rendering)
        else:
            del self._renderings[key]
