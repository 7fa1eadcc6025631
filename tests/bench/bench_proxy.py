"""Benchmark of the modelmon proxy: what the sidecar adds on top of a fast model server.

Run it from the repository root::

    .venv/bin/python tests/bench/bench_proxy.py            # full run, under 2 minutes
    .venv/bin/python tests/bench/bench_proxy.py --quick    # short run, under a minute
    .venv/bin/python tests/bench/bench_proxy.py --json figures.json
    .venv/bin/python tests/bench/bench_proxy.py --baseline # also a bare aiohttp proxy (+40%)
    .venv/bin/python tests/bench/bench_proxy.py --engine aiohttp  # the sidecar's aiohttp engine
    .venv/bin/python tests/bench/bench_proxy.py --profile   # also drift on all 16 request features
    .venv/bin/python tests/bench/bench_proxy.py --features 100 --scrapes only  # scrapes during load

Not a pytest test (pytest only collects ``test_*.py``). Needs ``wrk`` on PATH
(Debian: ``apt-get install wrk``) and the venv's ``modelmon`` command.

Everything runs on loopback (127.0.0.1, free ports picked at start), each part in its own
process:

- **upstream**: a minimal HTTP/1.1 keep-alive server (raw asyncio protocol on uvloop) that
  answers every request with a fixed ~200-byte KServe V2 JSON response. It costs about
  0.04 CPU-seconds per 1000 requests, so whatever is measured through the sidecar is the
  sidecar's cost;
- **sidecar**: ``modelmon serve --upstream http://127.0.0.1:<port> ... --log-level warning``
  with the built-in defaults, and the proxy engine ``--engine`` chooses (``proxy.engine``,
  default ``fast``);
- **load generator** (this file, ``--role loadgen``): open loop at a fixed rate over 16
  persistent keep-alive connections, raw asyncio protocol on uvloop. Request *i* is due at
  ``t0 + i / rate`` whether or not earlier ones were answered (a request due while all
  connections are busy waits for one and is counted as "queued"). Latency is measured from
  the moment a request is written to the socket until its response has been read whole;
- **wrk** for saturation (closed loop, one thread, 32 connections);
- with ``--baseline``, a bare aiohttp reverse proxy (low-level server + ClientSession, no
  monitoring): the floor for an aiohttp-based proxy, to tell aiohttp's cost from modelmon's.

What it measures:

1. Latency at 1000 requests/s, 10 s per round (``--quick``: 3 s), 3 rounds alternating
   direct / sidecar (/ baseline): p50 and p99, medians across rounds, and the latency the
   sidecar adds (its p50 minus the direct p50 of the same round; median across rounds).
2. Saturation throughput with wrk, direct and through the sidecar, alternating, and the ratio.
3. CPU seconds (user + system, all threads) of the sidecar process per 1000 requests during the
   fixed-rate rounds (and, for information, at saturation); its resident memory (RSS) right
   after start and after all the load.
4. Correctness: every response through the sidecar must be a 200 carrying the upstream's body
   byte for byte, and the sidecar's ``modelmon_requests_total`` for the inference route must
   match the number of requests sent (within the requests wrk leaves in flight when it stops).

The request body is a ~300-byte KServe V2 inference request, so the sidecar also decodes and
analyses every exchange (``modelmon_analysis_records_total`` is reported too). With ``--profile``
the sidecar gets a reference profile for the model's 16 inputs and its output (built from
synthetic data in the run's temporary directory), so every request is also checked for drift
and data quality: what a monitored production model costs, beyond the issue's default set-up.
``--features N`` sends N features per request (a ``[1, N]`` tensor) and profiles them all
(beyond 16, the last 10 as categorical codes); it implies ``--profile``.

With ``--scrapes also`` (or ``only``: without parts 1-3) the benchmark also measures what
``/metrics`` scrapes do to the proxied requests: per round (3, of 20 s each; ``--quick``: 1 of
10 s), a direct run and three runs through the sidecar, with no scrapes, with a scrape every
5 s, and with 20 scrapers back to back, all asking as Prometheus 2.x does (OpenMetrics, gzip)
from a child process (``--role scraper``). It reports p50, p99, p99.9 and max latency and what
the sidecar adds over the direct run, and the slowest request in flight during a scrape.

Prints a table with PASS/MISS per target (added p50 <= 0.3 ms and added p99 <= 1 ms at
1000 rps, <= 0.2 CPU-seconds per 1000 requests, RSS <= 60 MB). Misses do not change the exit
status: 0 when the run completed, 1 when a part crashed, did not start or a correctness check
failed, 2 when wrk or modelmon is missing. The machine's noise shows in the per-round lines
printed as the run goes; compare rounds before trusting a single figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
INFER_PATH = "/v2/models/bench/infer"
INFER_ROUTE = "/v2/models/{model}/infer"

# ~300-byte KServe V2 (Open Inference Protocol) request, and a ~200-byte response.
REQUEST_VALUES = [0.125, 1.5, -2.25, 3.0, 0.5, -0.75, 4.125, 2.0,
                  -1.0, 0.0625, 7.5, -3.25, 1.125, 0.25, -0.5, 9.0]
FEATURES = len(REQUEST_VALUES)
# With --features N > 16 the last CATEGORICAL of them are categorical (integer codes 0..11).
CATEGORICAL = 10


def request_body(features: int = FEATURES) -> bytes:
    """The inference request: one row of ``features`` values (16: the default ~300 bytes)."""
    data: list[float] = [REQUEST_VALUES[i % FEATURES] + i // FEATURES for i in range(features)]
    if features > FEATURES:
        data[-CATEGORICAL:] = [float(i % 12) for i in range(CATEGORICAL)]
    return json.dumps({
        "id": "bench-request-0001",
        "parameters": {"content_type": "np"},
        "inputs": [{"name": "input-0", "shape": [1, features], "datatype": "FP32", "data": data}],
    }, separators=(",", ":")).encode()


REQUEST_BODY = request_body()
RESPONSE_BODY = json.dumps({
    "model_name": "bench", "model_version": "1", "id": "bench-request-0001",
    "parameters": {"content_type": "np"},
    "outputs": [{"name": "predict", "shape": [1, 2], "datatype": "FP32", "data": [0.8125, 0.1875]}],
}, separators=(",", ":")).encode()
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(RESPONSE_BODY)).encode() + b"\r\n\r\n" + RESPONSE_BODY
)

# Targets (added latency at 1000 rps, CPU per 1000 requests, resident memory).
TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.0
TARGET_CPU_PER_1000 = 0.2
TARGET_RSS_MB = 60.0
TARGET_STALL_MS = 2.0  # --scrapes: the longest a scrape may hold up a proxied request
# The last line of a logged traceback, e.g. "aiohttp.client_exceptions.ClientConnectionResetError: ..."
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
# A round during which other processes used more than this (% of one core) is flagged.
NOISY_PERCENT = 15.0
# The load generator reports this many of its slowest requests (to line them up with scrapes).
SLOWEST = 500


@dataclass(frozen=True)
class Plan:
    rate: float
    latency_seconds: float
    latency_rounds: int
    warmup_seconds: float
    wrk_seconds: int
    wrk_rounds: int
    wrk_connections: int
    loadgen_connections: int
    scrape_seconds: float = 20.0  # --scrapes: per run (a scrape every 5 s: four of them)
    scrape_rounds: int = 3


FULL = Plan(rate=1000, latency_seconds=10, latency_rounds=3, warmup_seconds=2,
            wrk_seconds=8, wrk_rounds=2, wrk_connections=32, loadgen_connections=16)
QUICK = Plan(rate=1000, latency_seconds=3, latency_rounds=3, warmup_seconds=1,
             wrk_seconds=3, wrk_rounds=1, wrk_connections=32, loadgen_connections=16,
             scrape_seconds=10.0, scrape_rounds=1)
# --scrapes: how /metrics is scraped during a run (label, concurrent scrapers, interval in
# seconds; 0: back to back). The first scrape comes SCRAPE_FIRST seconds into the run.
SCRAPE_MODES: tuple[tuple[str, int, float], ...] = (
    ("no scrapes", 0, 0.0), ("every 5 s", 1, 5.0), ("20 back to back", 20, 0.0))
SCRAPE_FIRST = 1.0


class BenchError(RuntimeError):
    """A part of the benchmark failed (crashed, did not start, or answered wrongly)."""


# --- upstream: a minimal keep-alive HTTP/1.1 server --------------------------------------------


def _content_length(head: bytes) -> int:
    """Content-Length from a lower-cased header block (0 if absent)."""
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    j = head.find(b"\r\n", i + 2)
    return int(head[i + 17: j if j >= 0 else len(head)].strip())


class UpstreamProtocol(asyncio.Protocol):
    """Answers every request (any method, any path) with UPSTREAM_RESPONSE. Supports
    Content-Length bodies and pipelining; not chunked request bodies (answers 501 and closes)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = typing.cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buf = self._buf
        buf += data
        answers = 0
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end]).lower()
            if b"\r\ntransfer-encoding:" in head:
                self._transport.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n"
                                      b"Connection: close\r\n\r\n")
                self._transport.close()
                return
            total = end + 4 + _content_length(head)
            if len(buf) < total:
                break
            del buf[:total]
            answers += 1
            if b"\r\nconnection: close" in head:
                close = True
                break
        if answers:
            self._transport.write(UPSTREAM_RESPONSE * answers)
        if close:
            self._transport.close()


async def run_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, HOST, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# --- load generator: open loop, fixed rate, keep-alive ---------------------------------------


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, gen: LoadGenerator) -> None:
        self._gen = gen
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.due_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: bytes, due_at: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due_at = due_at
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        if b"\r\ntransfer-encoding:" in head:  # never expected here: counted as a lost connection
            raise BenchError(f"unexpected chunked response: {head[:200]!r}")
        total = end + 4 + _content_length(head)
        if len(buf) < total:
            return
        done = time.perf_counter()
        status = int(head[9:12])
        body = bytes(buf[end + 4: total])
        del buf[:total]
        if buf:
            raise BenchError("response bytes beyond the response to the one request in flight")
        self.busy = False
        self._gen.completed(self, status, body, done)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gen.connection_lost(self, exc)


@dataclass
class LoadResult:
    target: str
    rate: float
    duration: float
    sent: int
    completed: int
    ok: int
    non_200: int
    wrong_body: int
    connections_lost: int
    waited_for_connection: int
    achieved_rps: float
    # milliseconds, from the write of the request to the last byte of the response
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    # milliseconds, from when the request was due (includes the generator's own lateness)
    due_p50_ms: float
    due_p99_ms: float
    send_lag_p99_ms: float
    # the SLOWEST slowest requests: [perf_counter when written, latency in ms], slowest first
    slowest: list[list[float]] = field(default_factory=list)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 1])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class LoadGenerator:
    def __init__(self, target: str, port: int, rate: float, duration: float,
                 connections: int, expected_body: bytes | None,
                 body: bytes = REQUEST_BODY) -> None:
        self.target = target
        self.port = port
        self.rate = rate
        self.duration = duration
        self.n_connections = connections
        self.expected_body = expected_body
        self.request = (
            f"POST {INFER_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.idle: list[ClientConnection] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.service: list[float] = []
        self.sent_at: list[float] = []  # perf_counter (CLOCK_MONOTONIC) of each request's write
        self.response: list[float] = []
        self.lag: list[float] = []
        self.sent = self.ok = self.non_200 = self.wrong_body = self.lost = self.waited = 0
        self.all_done: asyncio.Future[None] | None = None
        self.total = 0

    def _dispatch(self, conn: ClientConnection, due_at: float) -> None:
        self.sent += 1
        conn.send(self.request, due_at)
        self.lag.append(conn.sent_at - due_at)

    def completed(self, conn: ClientConnection, status: int, body: bytes, done: float) -> None:
        self.service.append(done - conn.sent_at)
        self.sent_at.append(conn.sent_at)
        self.response.append(done - conn.due_at)
        if status == 200:
            self.ok += 1
        else:
            self.non_200 += 1
        if self.expected_body is not None and body != self.expected_body:
            self.wrong_body += 1
        if self.backlog:
            self._dispatch(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)  # LIFO: keep reusing the warmest connections
        self._check_done()

    def connection_lost(self, conn: ClientConnection, exc: Exception | None) -> None:
        if conn.busy:
            self.lost += 1
            conn.busy = False
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._check_done()

    def _check_done(self) -> None:
        finished = len(self.service) + self.lost
        if self.all_done is not None and not self.all_done.done() and finished >= self.total:
            self.all_done.set_result(None)

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        conns: list[ClientConnection] = []
        for _ in range(self.n_connections):
            _, proto = await loop.create_connection(lambda: ClientConnection(self), HOST, self.port)
            conns.append(proto)
        self.idle = list(conns)
        self.total = int(self.rate * self.duration)
        self.all_done = loop.create_future()
        interval = 1.0 / self.rate
        t0 = time.perf_counter() + 0.02
        i = 0
        while i < self.total:
            now = time.perf_counter()
            while i < self.total and t0 + i * interval <= now:
                due = t0 + i * interval
                i += 1
                if self.idle:
                    self._dispatch(self.idle.pop(), due)
                else:
                    self.waited += 1
                    self.backlog.append(due)
            if i < self.total:
                await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
        elapsed = time.perf_counter() - t0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.all_done), timeout=10.0)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        slowest = sorted(zip(self.service, self.sent_at, strict=True), reverse=True)[:SLOWEST]
        service = sorted(self.service)
        response = sorted(self.response)
        lag = sorted(self.lag)
        ms = 1000.0
        return LoadResult(
            target=self.target, rate=self.rate, duration=self.duration, sent=self.sent,
            completed=len(service), ok=self.ok, non_200=self.non_200, wrong_body=self.wrong_body,
            connections_lost=self.lost, waited_for_connection=self.waited,
            achieved_rps=self.sent / elapsed if elapsed > 0 else math.nan,
            p50_ms=percentile(service, 0.50) * ms, p90_ms=percentile(service, 0.90) * ms,
            p99_ms=percentile(service, 0.99) * ms, p999_ms=percentile(service, 0.999) * ms,
            max_ms=(service[-1] if service else math.nan) * ms,
            due_p50_ms=percentile(response, 0.50) * ms, due_p99_ms=percentile(response, 0.99) * ms,
            send_lag_p99_ms=percentile(lag, 0.99) * ms,
            slowest=[[sent, latency * ms] for latency, sent in slowest],
        )


# --- scrapers: /metrics during the load -------------------------------------------------------

# What Prometheus 2.x sends by default (so the sidecar renders OpenMetrics 1.0.0, gzipped).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
                     "application/openmetrics-text;version=0.0.1;q=0.4,"
                     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


async def run_scrapers(port: int, scrapers: int, interval: float, seconds: float,
                       first: float) -> list[list[float]]:
    """``scrapers`` concurrent GET /metrics as Prometheus sends it: all at once every
    ``interval`` seconds from ``first`` on, or (interval 0) back to back. Returns
    [start, end, status, bytes] per scrape (perf_counter, i.e. CLOCK_MONOTONIC: comparable
    with the load generator's times)."""
    import aiohttp

    url = f"http://{HOST}:{port}/metrics"
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    windows: list[list[float]] = []
    start = time.perf_counter()
    end = start + seconds
    async with aiohttp.ClientSession(auto_decompress=False,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
            windows.append([t0, time.perf_counter(), float(resp.status), float(len(body))])

        if interval > 0:
            at = start + first
            while at < end:
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                await asyncio.gather(*(one() for _ in range(scrapers)))
                at += interval
        else:
            async def back_to_back() -> None:
                await asyncio.sleep(first)
                while time.perf_counter() < end:
                    await one()
            await asyncio.gather(*(back_to_back() for _ in range(scrapers)))
    return windows


# --- baseline: the least an aiohttp reverse proxy can do ---------------------------------------


async def run_minimal_proxy(port: int, upstream_port: int) -> None:
    """A bare aiohttp proxy (low-level server + ClientSession, no monitoring), to tell the
    cost of aiohttp itself from the cost of modelmon's own code (``--baseline``)."""
    import aiohttp
    from aiohttp import web
    from yarl import URL

    base = f"http://{HOST}:{upstream_port}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar())

    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        async with session.request(request.method, URL(base + request.raw_path, encoded=True),
                                   data=body,
                                   headers={"Content-Type": request.content_type}) as upstream:
            data = await upstream.read()
            return web.Response(body=data, status=upstream.status,
                                headers={"Content-Type": upstream.content_type})

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await session.close()


# --- orchestration ---------------------------------------------------------------------------


def _event_loop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a modelmon dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Child:
    """A server child process whose output goes to a log file (shown if it fails)."""

    def __init__(self, name: str, argv: list[str], logdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL,
                                      env={**os.environ, **env} if env else None)
        self.ps = psutil.Process(self.popen.pid)

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with status {code}:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no output)"

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / (1024 * 1024)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


def wait_for(what: str, check: Callable[[], str | None], child: Child,
             timeout: float = 20.0) -> None:
    """Poll ``check`` (None when ready, else why not) until ready; fail with the child's log."""
    deadline = time.monotonic() + timeout
    why: str | None = "not checked"
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            why = check()
        except (OSError, urllib.error.URLError) as exc:
            why = str(exc)
        if why is None:
            return
        time.sleep(0.05)
    raise BenchError(f"{what} not ready after {timeout:.0f}s ({why}); its log:\n{child.log_tail()}")


def port_closed(port: int) -> str | None:
    with socket.create_connection((HOST, port), timeout=0.5):
        return None


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def not_ready(port: int, path: str) -> str | None:
    status, body = http_get(port, path)
    return None if status == 200 else f"{path} answered {status}: {body[:200]}"


def run_loadgen(port: int, target: str, rate: float, seconds: float, connections: int,
                features: int = FEATURES) -> LoadResult:
    argv = [sys.executable, __file__, "--role", "loadgen", "--port", str(port), "--target", target,
            "--rate", str(rate), "--seconds", str(seconds), "--connections", str(connections),
            "--features", str(features)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if proc.returncode != 0:
        raise BenchError(f"load generator ({target}) failed with status {proc.returncode}:\n"
                         f"{proc.stderr[-3000:]}")
    return LoadResult(**json.loads(proc.stdout))


WRK_LUA = """\
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class WrkResult:
    target: str
    requests: int
    seconds: float
    rps: float
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    cpu_seconds_per_1000: float = math.nan  # of the proxy measured (upstream's for direct)


def run_wrk(wrk: str, script: Path, port: int, target: str, plan: Plan) -> WrkResult:
    argv = [wrk, "-t1", f"-c{plan.wrk_connections}", f"-d{plan.wrk_seconds}s", "-s", str(script),
            f"http://{HOST}:{port}{INFER_PATH}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=plan.wrk_seconds + 30)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk ({target}) failed with status {proc.returncode}:\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    d = json.loads(line.removeprefix("BENCHJSON "))
    seconds = d["duration_us"] / 1e6
    return WrkResult(target=target, requests=d["requests"], seconds=seconds,
                     rps=d["requests"] / seconds,
                     errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
                     non_2xx=d["status"], p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000)


@dataclass
class MetricsCheck:
    requests_total: float
    requests_200: float
    expected: int
    tolerance: int
    analysed_records: float
    dropped_records: float
    upstream_errors: float
    ok: bool


def scrape_metrics(admin_port: int, expected: int, tolerance: int) -> MetricsCheck:
    status, text = http_get(admin_port, "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    total = ok200 = analysed = dropped = errors = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modelmon_requests_total" and s.labels.get("route") == INFER_ROUTE:
                total += s.value
                if s.labels.get("code") == "200":
                    ok200 += s.value
            elif s.name == "modelmon_analysis_records_total" and s.labels.get("source") == "proxy":
                analysed += s.value
            elif s.name == "modelmon_analysis_dropped_records_total":
                dropped += s.value
            elif s.name == "modelmon_upstream_errors_total":
                errors += s.value
    good = abs(total - expected) <= tolerance and total - ok200 <= tolerance and errors == 0
    return MetricsCheck(total, ok200, expected, tolerance, analysed, dropped, errors, good)


@dataclass
class ScrapeRun:
    """One fixed-rate run through the sidecar while /metrics is scraped (--scrapes)."""

    round: int
    mode: str
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    added_p50_ms: float  # minus the direct run of the same round
    added_p99_ms: float
    added_p999_ms: float
    scrapes: int
    failed_scrapes: int
    scrape_median_ms: float
    scrape_bytes: float  # as sent (gzip)
    # the slowest request in flight while a scrape ran, and by how much it was slower than the
    # slowest request of this round's run without scrapes (analysis and the machine hold some
    # requests up by milliseconds anyway): what scrapes added to the worst case
    worst_during_scrape_ms: float
    excess_ms: float


def during(slowest: Sequence[Sequence[float]], windows: Sequence[Sequence[float]]) -> float:
    """The largest latency (ms) among ``slowest`` ([sent, latency ms]) of the requests in flight
    while any window ([start, end, ...]) was open. If none of them was, every request in flight
    then was faster than the fastest listed: that latency is returned (an upper bound)."""
    worst = math.nan
    for sent, latency in slowest:
        done = sent + latency / 1000
        if any(sent <= w[1] and done >= w[0] for w in windows):
            worst = latency if math.isnan(worst) else max(worst, latency)
    if math.isnan(worst) and slowest and windows:
        return min(latency for _, latency in slowest)
    return worst


def scrape_runs(plan: Plan, direct_port: int, traffic_port: int, admin_port: int, features: int,
                failures: list[str], sidecar: Child) -> tuple[list[ScrapeRun], int]:
    """Per round: a direct run, then a run through the sidecar per SCRAPE_MODES. Returns the
    runs and how many requests went through the sidecar."""
    runs: list[ScrapeRun] = []
    sent = 0
    for rnd in range(1, plan.scrape_rounds + 1):
        direct = run_loadgen(direct_port, "direct", plan.rate, plan.scrape_seconds,
                             plan.loadgen_connections, features)
        print(f"[bench] scrapes {rnd} direct          : p50 {direct.p50_ms:.3f} ms  p99 "
              f"{direct.p99_ms:.3f} ms  p99.9 {direct.p999_ms:.3f} ms  max {direct.max_ms:6.2f} ms",
              flush=True)
        quiet_max = math.nan
        for mode, scrapers, interval in SCRAPE_MODES:
            scraper = None
            if scrapers:
                scraper = subprocess.Popen(
                    [sys.executable, __file__, "--role", "scraper", "--port", str(admin_port),
                     "--scrapers", str(scrapers), "--interval", str(interval),
                     "--seconds", str(plan.scrape_seconds)],
                    stdout=subprocess.PIPE, text=True)
            r = run_loadgen(traffic_port, "sidecar", plan.rate, plan.scrape_seconds,
                            plan.loadgen_connections, features)
            sent += r.sent
            windows: list[list[float]] = []
            if scraper is not None:
                out, _ = scraper.communicate(timeout=plan.scrape_seconds + 60)
                if scraper.returncode != 0:
                    raise BenchError(f"scraper failed with status {scraper.returncode}")
                windows = json.loads(out)
            if r.ok != r.sent or r.wrong_body or r.connections_lost:
                failures.append(f"scrapes ({mode}): sent {r.sent}, 200s {r.ok}, other {r.non_200}, "
                                f"wrong body {r.wrong_body}, lost {r.connections_lost}")
            failed = sum(1 for w in windows if w[2] != 200)
            if failed:
                failures.append(f"scrapes ({mode}): {failed} of {len(windows)} scrapes failed")
            if not scrapers:
                quiet_max = r.max_ms
            worst = during(r.slowest, windows) if windows else math.nan
            run = ScrapeRun(
                round=rnd, mode=mode, p50_ms=r.p50_ms, p99_ms=r.p99_ms, p999_ms=r.p999_ms,
                max_ms=r.max_ms, added_p50_ms=r.p50_ms - direct.p50_ms,
                added_p99_ms=r.p99_ms - direct.p99_ms, added_p999_ms=r.p999_ms - direct.p999_ms,
                scrapes=len(windows), failed_scrapes=failed,
                scrape_median_ms=median([1000 * (w[1] - w[0]) for w in windows]),
                scrape_bytes=median([w[3] for w in windows]),
                worst_during_scrape_ms=worst, excess_ms=worst - quiet_max)
            runs.append(run)
            print(f"[bench] scrapes {rnd} {mode:16s}: p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  "
                  f"p99.9 {r.p999_ms:.3f} ms  max {r.max_ms:6.2f} ms"
                  + (f"  ({len(windows)} scrapes, median {run.scrape_median_ms:.1f} ms; slowest "
                     f"request during one {worst:.2f} ms)" if windows else ""), flush=True)
            sidecar.check_alive()
    return runs, sent


@dataclass
class TargetFigures:
    """Medians across rounds for one target (direct, sidecar or baseline)."""

    p50_ms: float = math.nan
    p99_ms: float = math.nan
    added_p50_ms: float = math.nan  # minus direct, paired round by round
    added_p99_ms: float = math.nan
    rps: float = math.nan  # saturation (wrk)
    cpu_seconds_per_1000: float = math.nan  # at the fixed rate (direct: the upstream's)
    cpu_percent_at_rate: float = math.nan
    cpu_seconds_per_1000_saturated: float = math.nan


@dataclass
class Figures:
    mode: str
    plan: dict[str, Any]
    engine: str = "fast"  # the sidecar's proxy.engine
    profile: bool = False  # drift on the request's 16 features (--profile)
    direct_p50_ms: float = math.nan
    direct_p99_ms: float = math.nan
    sidecar_p50_ms: float = math.nan
    sidecar_p99_ms: float = math.nan
    added_p50_ms: float = math.nan
    added_p99_ms: float = math.nan
    direct_rps: float = math.nan
    sidecar_rps: float = math.nan
    throughput_ratio: float = math.nan
    sidecar_cpu_seconds_per_1000: float = math.nan
    sidecar_cpu_seconds_per_1000_saturated: float = math.nan
    sidecar_cpu_percent_at_rate: float = math.nan
    upstream_cpu_seconds_per_1000: float = math.nan
    sidecar_rss_start_mb: float = math.nan
    sidecar_rss_after_mb: float = math.nan
    sidecar_rss_peak_mb: float = math.nan
    sidecar_error_log_lines: int = 0
    sidecar_top_exception: str = ""  # the exception its ERROR tracebacks end with most often
    # CPU used by processes outside the benchmark during the rounds, % of one core
    others_cpu_percent_mean: float = math.nan
    others_cpu_percent_max: float = math.nan
    baseline: dict[str, Any] | None = None  # TargetFigures of the bare aiohttp proxy
    latency_rounds: list[dict[str, Any]] = field(default_factory=list)
    wrk_rounds: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    correctness_failures: list[str] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: int = FEATURES  # request features (profiled with --profile / --features)
    scrape_runs: list[dict[str, Any]] = field(default_factory=list)  # --scrapes


class OtherLoad:
    """CPU that processes outside the benchmark used during a measurement, in % of one core:
    the machine-wide user + system time from /proc/stat minus that of the benchmark's own
    processes (servers, finished load generators, this process). Approximate (kernel threads
    count as "others"), but a busy neighbour shows plainly."""

    _tick = os.sysconf("SC_CLK_TCK")

    def __init__(self, ours: Sequence[Child]) -> None:
        self._ours = ours
        self._t0 = self._busy0 = self._own0 = 0.0

    @classmethod
    def _busy(cls) -> float:
        with open("/proc/stat") as f:
            fields = f.readline().split()  # cpu user nice system idle iowait irq softirq ...
        return (int(fields[1]) + int(fields[2]) + int(fields[3])) / cls._tick

    def _own(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for: loadgen, wrk
        return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
                + sum(c.cpu_seconds() for c in self._ours))

    def start(self) -> None:
        self._t0, self._busy0, self._own0 = time.monotonic(), self._busy(), self._own()

    def stop(self) -> float:
        wall = time.monotonic() - self._t0
        others = (self._busy() - self._busy0) - (self._own() - self._own0)
        return max(0.0, 100 * others / wall) if wall > 0 else math.nan


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _missing(what: str) -> typing.NoReturn:
    print(f"bench_proxy: {what}", file=sys.stderr)
    raise SystemExit(2)


def find_tools() -> tuple[str, Path]:
    wrk = shutil.which("wrk")
    if wrk is None:
        _missing("`wrk` not found on PATH (Debian: apt-get install wrk)")
    modelmon = Path(sys.executable).parent / "modelmon"
    if not modelmon.exists():
        found = shutil.which("modelmon")
        if found is None:
            _missing("`modelmon` command not found (pip install -e . into this Python first)")
        modelmon = Path(found)
    compile_package()
    return wrk, modelmon


def compile_package() -> None:
    """Write the package's bytecode, as an installed sidecar has it (pip compiles at install;
    the image's modules are compiled when it is built). An editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module at each start, and the
    compiler's freed memory stays in the sidecar's RSS."""
    import importlib.util

    spec = importlib.util.find_spec("modelmon")
    if spec is None or not spec.submodule_search_locations:
        _missing("the modelmon package is not importable from this Python")
    package = next(iter(spec.submodule_search_locations))
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True,
                   stdout=subprocess.DEVNULL)


def bench_profile(n_features: int = FEATURES) -> Any:
    """The bench model's reference profile: its ``n_features`` inputs (numeric; beyond 16, the
    last CATEGORICAL are categorical, 12 integer codes) and its output."""
    import numpy as np
    from modelmon.reference.profile import Feature, Profile, categorical_feature, numeric_feature

    rng = np.random.default_rng(0)
    n_cat = CATEGORICAL if n_features > FEATURES else 0
    features: tuple[Feature, ...] = tuple(numeric_feature(f"f{i}", rng.normal(0, 3, 10_000))
                                          for i in range(n_features - n_cat))
    features += tuple(categorical_feature(f"c{i}", rng.integers(0, 12, 10_000).tolist())
                      for i in range(n_cat))
    features += (numeric_feature("predict", rng.random(10_000), role="output"),)
    return Profile("bench", "1", 10_000, features)


def write_profile_config(logdir: Path, n_features: int = FEATURES) -> Path:
    """A config giving the bench model a reference profile of its inputs and its output."""
    profile = logdir / "profile.json"
    bench_profile(n_features).save(profile)
    config = logdir / "modelmon.yaml"
    config.write_text(json.dumps({"models": [{"name": "bench", "profile": str(profile)}]}))
    return config


def run_benchmark(plan: Plan, mode: str, logdir: Path, baseline: bool,
                  engine: str = "fast", profile: bool = False, features: int = FEATURES,
                  scrapes: bool = False) -> Figures:
    wrk, modelmon = find_tools()
    figs = Figures(mode=mode, plan=asdict(plan), engine=engine, profile=profile, features=features)
    failures = figs.correctness_failures
    up_port, traffic_port, admin_port, base_port = free_ports(4)
    lua = logdir / "post.lua"
    lua.write_text(WRK_LUA.format(path=INFER_PATH, body=request_body(features).decode()))
    children: list[Child] = []
    try:
        upstream = Child("upstream", [sys.executable, __file__, "--role", "upstream",
                                      "--port", str(up_port)], logdir)
        children.append(upstream)
        wait_for("upstream", lambda: port_closed(up_port), upstream)
        sidecar = Child("sidecar", [
            str(modelmon), "serve", "--upstream", f"http://{HOST}:{up_port}", "--host", HOST,
            "--traffic-port", str(traffic_port), "--admin-port", str(admin_port),
            "--log-level", "warning",
            *(["--config", str(write_profile_config(logdir, features))] if profile else [])],
            logdir, env={"MODELMON_PROXY__ENGINE": engine})
        children.append(sidecar)
        wait_for("sidecar", lambda: not_ready(admin_port, "/readyz"), sidecar)
        wait_for("sidecar traffic port", lambda: port_closed(traffic_port), sidecar)
        # process under test and port, per target; "direct" charges CPU to the upstream
        procs: dict[str, tuple[Child, int]] = {"direct": (upstream, up_port),
                                               "sidecar": (sidecar, traffic_port)}
        if baseline:
            base = Child("baseline", [sys.executable, __file__, "--role", "baseline",
                                      "--port", str(base_port), "--upstream-port", str(up_port)],
                         logdir)
            children.append(base)
            wait_for("baseline proxy", lambda: port_closed(base_port), base)
            procs["baseline"] = (base, base_port)
        time.sleep(0.3)
        figs.sidecar_rss_start_mb = sidecar.rss_mb()
        rss_samples = [figs.sidecar_rss_start_mb]
        sent_via_sidecar = 0
        print(f"[bench] upstream :{up_port}  sidecar :{traffic_port} (admin :{admin_port})"
              + (f"  baseline :{base_port}" if baseline else "") + f"  mode={mode} engine={engine}"
              + (f"  profile={features} features" if profile else f"  features={features}"),
              flush=True)

        def fixed_rate(target: str, seconds: float) -> LoadResult:
            result = run_loadgen(procs[target][1], target, plan.rate, seconds,
                                 plan.loadgen_connections, features)
            if result.ok != result.sent or result.wrong_body or result.connections_lost:
                failures.append(
                    f"{target} fixed-rate: sent {result.sent}, 200s {result.ok}, other "
                    f"{result.non_200}, wrong body {result.wrong_body}, "
                    f"lost {result.connections_lost}")
            return result

        for target in procs:  # warm-up: connection pools, caches, lazily built state
            r = fixed_rate(target, plan.warmup_seconds)
            if target == "sidecar":
                sent_via_sidecar += r.sent

        noise = OtherLoad(children)
        others: list[float] = []
        p50: dict[str, list[float]] = {t: [] for t in procs}
        p99: dict[str, list[float]] = {t: [] for t in procs}
        cpu_k: dict[str, list[float]] = {t: [] for t in procs}
        cpu_pct: dict[str, list[float]] = {t: [] for t in procs}
        for rnd in range(1, plan.latency_rounds + 1):
            for target, (proc, _) in procs.items():
                cpu0 = proc.cpu_seconds()
                noise.start()
                r = fixed_rate(target, plan.latency_seconds)
                others.append(noise.stop())
                cpu = proc.cpu_seconds() - cpu0
                p50[target].append(r.p50_ms)
                p99[target].append(r.p99_ms)
                cpu_k[target].append(cpu / (r.sent / 1000))
                cpu_pct[target].append(100 * cpu / plan.latency_seconds)
                if target == "sidecar":
                    sent_via_sidecar += r.sent
                    rss_samples.append(sidecar.rss_mb())
                figs.latency_rounds.append({k: v for k, v in asdict(r).items() if k != "slowest"}
                                           | {"round": rnd, "cpu_seconds": cpu,
                                              "others_cpu_percent": others[-1]})
                print(f"[bench] round {rnd} {target:8s}: {r.achieved_rps:5.0f} req/s  "
                      f"p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  max {r.max_ms:6.2f} ms  "
                      f"cpu {cpu_k[target][-1]:.3f} s/1000  (send lag p99 "
                      f"{r.send_lag_p99_ms:.2f} ms, {r.waited_for_connection} queued; "
                      f"others {others[-1]:.0f}%)", flush=True)
                proc.check_alive()

        if scrapes:
            runs, n = scrape_runs(plan, up_port, traffic_port, admin_port, features, failures,
                                  sidecar)
            figs.scrape_runs = [asdict(run) for run in runs]
            sent_via_sidecar += n
            rss_samples.append(sidecar.rss_mb())

        rps: dict[str, list[float]] = {t: [] for t in procs}
        sat_cpu: dict[str, list[float]] = {t: [] for t in procs}
        for rnd in range(1, plan.wrk_rounds + 1):
            for target, (proc, port) in procs.items():
                cpu0 = proc.cpu_seconds()
                noise.start()
                w = run_wrk(wrk, lua, port, target, plan)
                others.append(noise.stop())
                w.cpu_seconds_per_1000 = (proc.cpu_seconds() - cpu0) / (w.requests / 1000)
                if w.errors or w.non_2xx:
                    failures.append(f"{target} wrk: {w.errors} socket errors, {w.non_2xx} non-2xx")
                if target == "sidecar":
                    sent_via_sidecar += w.requests
                    rss_samples.append(sidecar.rss_mb())
                rps[target].append(w.rps)
                sat_cpu[target].append(w.cpu_seconds_per_1000)
                figs.wrk_rounds.append(asdict(w) | {"round": rnd, "others_cpu_percent": others[-1]})
                print(f"[bench] wrk {rnd} {target:8s}: {w.rps:8.0f} req/s  p50 {w.p50_ms:.2f} ms  "
                      f"p99 {w.p99_ms:.2f} ms  cpu {w.cpu_seconds_per_1000:.3f} s/1000  "
                      f"(others {others[-1]:.0f}%)", flush=True)
                proc.check_alive()

        figs.others_cpu_percent_mean = statistics.fmean(others) if others else math.nan
        figs.others_cpu_percent_max = max(others, default=math.nan)
        per_target: dict[str, TargetFigures] = {}
        for target in procs:
            per_target[target] = TargetFigures(
                p50_ms=median(p50[target]), p99_ms=median(p99[target]),
                # each round against the direct round just before it, so drifts cancel out
                added_p50_ms=median([a - b for a, b in zip(p50[target], p50["direct"], strict=True)]),
                added_p99_ms=median([a - b for a, b in zip(p99[target], p99["direct"], strict=True)]),
                rps=median(rps[target]), cpu_seconds_per_1000=median(cpu_k[target]),
                cpu_percent_at_rate=median(cpu_pct[target]),
                cpu_seconds_per_1000_saturated=median(sat_cpu[target]))
        d, sc = per_target["direct"], per_target["sidecar"]
        figs.direct_p50_ms, figs.direct_p99_ms = d.p50_ms, d.p99_ms
        figs.sidecar_p50_ms, figs.sidecar_p99_ms = sc.p50_ms, sc.p99_ms
        figs.added_p50_ms, figs.added_p99_ms = sc.added_p50_ms, sc.added_p99_ms
        figs.direct_rps, figs.sidecar_rps = d.rps, sc.rps
        figs.throughput_ratio = sc.rps / d.rps
        figs.sidecar_cpu_seconds_per_1000 = sc.cpu_seconds_per_1000
        figs.sidecar_cpu_seconds_per_1000_saturated = sc.cpu_seconds_per_1000_saturated
        figs.sidecar_cpu_percent_at_rate = sc.cpu_percent_at_rate
        figs.upstream_cpu_seconds_per_1000 = d.cpu_seconds_per_1000
        if baseline:
            figs.baseline = asdict(per_target["baseline"])

        time.sleep(0.5)  # let requests wrk left in flight finish and the analysis queue drain
        # wrk stops with up to one request per connection in flight; the sidecar may count those.
        tolerance = plan.wrk_rounds * plan.wrk_connections + 5
        check = scrape_metrics(admin_port, sent_via_sidecar, tolerance)
        figs.metrics = asdict(check)
        if not check.ok:
            failures.append(
                f"/metrics: modelmon_requests_total{{route={INFER_ROUTE}}} = "
                f"{check.requests_total:.0f} (code 200: {check.requests_200:.0f}), expected "
                f"{sent_via_sidecar} +- {tolerance}; upstream errors {check.upstream_errors:.0f}")
        figs.sidecar_rss_after_mb = sidecar.rss_mb()
        figs.sidecar_rss_peak_mb = max([*rss_samples, figs.sidecar_rss_after_mb])
        log_lines = sidecar.log_text().splitlines()
        figs.sidecar_error_log_lines = sum(" ERROR " in line for line in log_lines)
        exceptions = collections.Counter(line for line in log_lines if EXCEPTION_LINE.match(line))
        if exceptions:
            text, count = exceptions.most_common(1)[0]
            figs.sidecar_top_exception = f"{text} (x{count})"
        sidecar.check_alive()
    finally:
        for child in reversed(children):
            child.stop()
    figs.targets = evaluate_targets(figs)
    return figs


def evaluate_targets(f: Figures) -> dict[str, dict[str, Any]]:
    rows = {
        "added_p50_ms": (f.added_p50_ms, TARGET_ADDED_P50_MS),
        "added_p99_ms": (f.added_p99_ms, TARGET_ADDED_P99_MS),
        "cpu_seconds_per_1000": (f.sidecar_cpu_seconds_per_1000, TARGET_CPU_PER_1000),
        "rss_mb": (max(f.sidecar_rss_after_mb, f.sidecar_rss_peak_mb), TARGET_RSS_MB),
    }
    excess = [r["excess_ms"] for r in f.scrape_runs if r["scrapes"]]
    if excess:
        rows["scrape_excess_ms"] = (max(excess), TARGET_STALL_MS)
    return {name: {"value": v, "target": t, "pass": bool(v <= t)} for name, (v, t) in rows.items()
            if math.isfinite(v)}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and math.isfinite(a / b) else "-"


def render(f: Figures) -> str:
    rate = f"{f.plan['rate']:.0f} rps"
    conns = f"wrk -c{f.plan['wrk_connections']}"
    b = TargetFigures(**f.baseline) if f.baseline else None
    cols = f"{'direct':>10s}{'sidecar':>10s}{'added':>10s}{'ratio':>9s}"
    if b:
        cols += f"   |{'bare aiohttp proxy':>19s}{'added':>8s}"

    def row(label: str, direct: float, side: float, added: float | None, base: float,
            base_added: float | None, fmt: str, show_ratio: bool = True) -> str:
        a = f"{added:10{fmt}}" if added is not None else " " * 10
        r = ratio(side, direct) if show_ratio else ""
        d = f"{direct:10{fmt}}" if math.isfinite(direct) else f"{'-':>10s}"
        line = f"{label:30s}{d}{side:10{fmt}}{a}{r:>9s}"
        if b:
            ba = f"{base_added:8{fmt}}" if base_added is not None else " " * 8
            line += f"   |{base:19{fmt}}{ba}"
        return line

    lines = [
        "",
        f"modelmon proxy benchmark ({f.mode}; {f.engine} engine"
        f"{f'; drift on {f.features} features' if f.profile else ''}; "
        f"loopback, {os.cpu_count()} CPUs; medians of "
        f"{f.plan['latency_rounds']} fixed-rate and {f.plan['wrk_rounds']} wrk rounds)",
        "",
        f"{'':30s}{cols}",
        row(f"latency p50 @ {rate} (ms)", f.direct_p50_ms, f.sidecar_p50_ms, f.added_p50_ms,
            b.p50_ms if b else 0, b.added_p50_ms if b else None, ".3f"),
        row(f"latency p99 @ {rate} (ms)", f.direct_p99_ms, f.sidecar_p99_ms, f.added_p99_ms,
            b.p99_ms if b else 0, b.added_p99_ms if b else None, ".3f"),
        row(f"saturation, {conns} (req/s)", f.direct_rps, f.sidecar_rps, None,
            b.rps if b else 0, None, ".0f"),
        row(f"CPU s/1000 req @ {rate}", f.upstream_cpu_seconds_per_1000,
            f.sidecar_cpu_seconds_per_1000, None,
            b.cpu_seconds_per_1000 if b else 0, None, ".3f", show_ratio=False),
        row("CPU s/1000 req, saturated", math.nan, f.sidecar_cpu_seconds_per_1000_saturated,
            None, b.cpu_seconds_per_1000_saturated if b else 0, None, ".3f", show_ratio=False),
        "",
        f"  (CPU in the direct column is the upstream server's own; the sidecar used "
        f"{f.sidecar_cpu_percent_at_rate:.0f}% of a core at {rate})",
        f"sidecar RSS: {f.sidecar_rss_start_mb:.1f} MB after start, "
        f"{f.sidecar_rss_after_mb:.1f} MB after load (peak seen {f.sidecar_rss_peak_mb:.1f} MB)",
        f"machine noise: processes outside the benchmark used {f.others_cpu_percent_mean:.0f}% of "
        f"a core on average during the rounds (worst round {f.others_cpu_percent_max:.0f}%)"
        + ("  <- busy machine: figures unreliable" if f.others_cpu_percent_max > NOISY_PERCENT
           else ""),
        "",
        "targets:",
    ]
    labels = {
        "added_p50_ms": (f"added p50 latency @ {rate}", "ms"),
        "added_p99_ms": (f"added p99 latency @ {rate}", "ms"),
        "cpu_seconds_per_1000": (f"sidecar CPU per 1000 requests @ {rate}", "s"),
        "rss_mb": ("sidecar RSS after load", "MB"),
        "scrape_excess_ms": ("worst request during scrapes, over without", "ms"),
    }
    for name, t in f.targets.items():
        label, unit = labels[name]
        lines.append(f"  {label:40s}{t['value']:9.3f} {unit:3s}<= {t['target']:<6g}"
                     f"{'PASS' if t['pass'] else 'MISS'}")
    if f.scrape_runs:
        lines += ["", *render_scrapes(f)]
    m = f.metrics
    lines += ["", "correctness:"]
    if m:
        lines.append(
            f"  /metrics modelmon_requests_total (infer route): {m['requests_total']:.0f} "
            f"(code 200: {m['requests_200']:.0f}); sent through the sidecar: {m['expected']} "
            f"(tolerance {m['tolerance']});\n  records analysed {m['analysed_records']:.0f}, "
            f"dropped {m['dropped_records']:.0f}")
    if f.correctness_failures:
        lines += [f"  FAILED: {msg}" for msg in f.correctness_failures]
    else:
        lines.append("  OK: every response through the sidecar was a 200 with the upstream's "
                     "body, byte for byte; request counter matches")
    if f.sidecar_error_log_lines:
        lines.append(f"  note: the sidecar logged {f.sidecar_error_log_lines} ERROR lines"
                     + (f"; most often: {f.sidecar_top_exception}" if f.sidecar_top_exception
                        else ""))
    return "\n".join(lines)


def render_scrapes(f: Figures) -> list[str]:
    runs = [ScrapeRun(**r) for r in f.scrape_runs]
    rounds = max(r.round for r in runs)
    lines = [f"/metrics scraped during the load ({f.features} features, OpenMetrics + gzip as "
             f"Prometheus asks; medians of {rounds} rounds of {f.plan['scrape_seconds']:.0f} s; "
             f"during, excess: the worst round)",
             f"{'':18s}{'p50':>9s}{'p99':>9s}{'p99.9':>9s}{'max':>9s}  | added{'p50':>9s}"
             f"{'p99':>9s}{'p99.9':>9s}  |{'scrapes':>8s}{'scrape':>9s}{'during':>9s}{'excess':>9s}"]
    for mode, scrapers, _ in SCRAPE_MODES:
        of = [r for r in runs if r.mode == mode]
        if not of:
            continue

        def med(attr: str, of: list[ScrapeRun] = of) -> float:
            return median([getattr(r, attr) for r in of])

        during_ms = max((r.worst_during_scrape_ms for r in of), default=math.nan)
        excess = max((r.excess_ms for r in of), default=math.nan)
        lines.append(
            f"{mode:18s}{med('p50_ms'):9.3f}{med('p99_ms'):9.3f}{med('p999_ms'):9.3f}"
            f"{med('max_ms'):9.2f}  |{med('added_p50_ms'):+14.3f}{med('added_p99_ms'):+9.3f}"
            f"{med('added_p999_ms'):+9.3f}  |{sum(r.scrapes for r in of):8d}"
            + (f"{med('scrape_median_ms'):9.1f}{during_ms:9.2f}{excess:+9.2f}" if scrapers else ""))
    lines.append("  (ms; added: minus the direct run of the same round; scrape: median time to "
                 "answer one; during: the slowest request\n  in flight during a scrape; excess: "
                 "that minus the slowest request of the round's run without scrapes)")
    return lines


def _finite(obj: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark of the modelmon proxy against a fast upstream (see module docstring).")
    p.add_argument("--quick", action="store_true", help="short run (under a minute)")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    p.add_argument("--engine", choices=["fast", "aiohttp"], default="fast",
                   help="the sidecar's proxy engine (proxy.engine; default fast)")
    p.add_argument("--profile", action="store_true",
                   help="give the sidecar a reference profile: drift on all 16 request features")
    p.add_argument("--features", type=int, default=FEATURES, metavar="N",
                   help="N request features (default 16); above 16, implies --profile, and the "
                        f"last {CATEGORICAL} are categorical")
    p.add_argument("--scrapes", choices=["no", "also", "only"], default="no",
                   help="also (or only) measure latency while /metrics is scraped every 5 s and "
                        "by 20 scrapers back to back, each run against one without scrapes")
    p.add_argument("--baseline", action="store_true",
                   help="also measure a bare aiohttp proxy, to tell aiohttp's cost from modelmon's")
    # internal: the child processes are this same file in another role
    p.add_argument("--role", choices=["bench", "upstream", "loadgen", "baseline", "scraper"],
                   default="bench",
                   help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--target", default="direct", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=1000.0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--connections", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--scrapers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_benchmark's finally: children stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "upstream":
        _event_loop_run(run_upstream(args.port))
        return 0
    if args.role == "baseline":
        _event_loop_run(run_minimal_proxy(args.port, args.upstream_port))
        return 0
    if args.role == "scraper":
        windows = _event_loop_run(run_scrapers(args.port, args.scrapers, args.interval,
                                               args.seconds, SCRAPE_FIRST))
        print(json.dumps(windows))
        return 0
    if args.role == "loadgen":
        gen = LoadGenerator(args.target, args.port, args.rate, args.seconds, args.connections,
                            RESPONSE_BODY, request_body(args.features))
        result: LoadResult = _event_loop_run(gen.run())
        print(json.dumps(asdict(result)))
        return 0

    signal.signal(signal.SIGTERM, _sigterm)
    plan, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    if args.scrapes == "only":
        plan = replace(plan, latency_rounds=0, wrk_rounds=0)
        mode += ", scrapes only"
    profile = args.profile or args.features > FEATURES
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_proxy.") as tmp:
        try:
            figs = run_benchmark(plan, mode, Path(tmp), args.baseline, args.engine, profile,
                                 args.features, args.scrapes != "no")
        except BenchError as exc:
            print(f"bench_proxy: {exc}", file=sys.stderr)
            return 1
    print(render(figs))
    print(f"\n(run time {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(asdict(figs)), indent=2) + "\n")
    return 1 if figs.correctness_failures else 0


if __name__ == "__main__":
    sys.exit(main())
