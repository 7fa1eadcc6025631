"""What a client may hold of the proxy: head bytes counted as they arrive, a deadline for a
complete head, a bounded number of connections that always leaves room for the upstream pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar, read_response
from helpers import free_port, stop, wait_http
from modelmon.proxy.fast.wire import MAX_HEAD_BYTES, MAX_PIPELINED
from modelmon.sidecar.fds import ADMIN_CONNECTIONS

pytestmark = pytest.mark.engines


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_header_that_never_ends_is_refused_as_it_arrives(proxied: Running) -> None:
    """One field value with no line end: 431 once the head passes its limit, not buffered."""
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    response = None
    read = asyncio.ensure_future(read_response(reader))
    while sent < 64 * 1024 * 1024 and not read.done():
        writer.write(b"b" * 65536)
        sent += 65536
        try:
            await asyncio.wait_for(writer.drain(), 2)
        except (ConnectionError, asyncio.TimeoutError):
            break
        await asyncio.sleep(0)
    response = await asyncio.wait_for(read, 5)
    writer.close()
    # aiohttp's parser answers 400 (line too long) at its 8190-byte field limit
    assert response.status == (431 if proxied.engine == "fast" else 400)
    # refused while the head was still small: only what the sockets buffer went in after it
    assert sent < MAX_HEAD_BYTES + 8 * 1024 * 1024, sent
    if proxied.engine == "fast":
        assert proxied.sample("modelmon_proxy_client_connections_closed_total",
                              {"reason": "head_too_large"}) == 1
    async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
        assert resp.status == 200


@pytest.mark.only_engine("fast")  # counts its own head bytes
async def test_a_large_head_in_small_pieces_under_the_limit_passes(proxied: Running) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 480) for i in range(120))  # ~59 KB of fields
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    reader, writer = await _connect(proxied.listeners.traffic_port)
    for i in range(0, len(head), 1000):
        writer.write(head[i:i + 1000])
        await writer.drain()
        await asyncio.sleep(0)
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status == 200


@pytest.mark.only_engine("fast")  # the fast engine's head deadline
async def test_a_head_not_complete_in_time_is_408_and_closed(upstream: TestServer,
                                                             start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")),
                                  proxy={"request_head_timeout_seconds": 0.4})
    slow_r, slow_w = await _connect(running.listeners.traffic_port)
    slow_w.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # and nothing more
    silent_r, silent_w = await _connect(running.listeners.traffic_port)  # sends nothing at all
    kept_r, kept_w = await _connect(running.listeners.traffic_port)  # a served, kept-alive client
    kept_w.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(kept_r), 2)).status == 200
    start = time.perf_counter()
    response = await asyncio.wait_for(read_response(slow_r), 3)
    assert response.status == 408 and response.header("Connection") == "close"
    assert await asyncio.wait_for(slow_r.read(), 2) == b""
    assert await asyncio.wait_for(silent_r.read(), 2) == b""  # closed without a word
    assert time.perf_counter() - start < 2.5
    # the kept-alive connection is idle, not late with a head: still served
    kept_w.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(kept_r), 2)).status == 200
    for w in (slow_w, silent_w, kept_w):
        w.close()
    assert running.sample("modelmon_proxy_client_connections_closed_total",
                          {"reason": "head_timeout"}) == 2


@pytest.mark.only_engine("fast")  # the fast engine's body deadline
async def test_a_request_body_that_stops_coming_is_408_and_frees_the_upstream(
        upstream: TestServer, start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")),
                                  proxy={"request_body_timeout_seconds": 0.4},
                                  upstream={"max_connections": 1})
    reader, writer = await _connect(running.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    response = await asyncio.wait_for(read_response(reader), 3)
    assert response.status == 408
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    # the one upstream connection it held serves the next call
    async with running.session.post(running.traffic_url + "/echo", data=b"y" * 100) as resp:
        assert resp.status == 200
    assert running.sample("modelmon_proxy_client_connections_closed_total",
                          {"reason": "body_timeout"}) == 1


@pytest.mark.only_engine("fast")  # the fast engine's connection limit
async def test_at_the_connection_limit_slow_heads_make_room_and_busy_calls_are_kept(
        upstream: TestServer, start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")), proxy={"max_connections": 5})
    port = running.listeners.traffic_port
    slow = []
    for _ in range(5):
        r, w = await _connect(port)
        w.write(b"GET / HTTP/1.1\r\nX-Slow: ")
        slow.append((r, w))
    await asyncio.sleep(0.05)
    # five clients at once: each closes the slowest of those to get in, and is served
    async with aiohttp.ClientSession() as s:

        async def call() -> int:
            async with s.get(f"http://127.0.0.1:{port}/slow?delay=0.2") as resp:
                await resp.read()
                return resp.status

        assert await asyncio.gather(*(call() for _ in range(5))) == [200] * 5
    for r, _ in slow:
        assert await asyncio.wait_for(r.read(), 2) == b""  # made room for the newcomers
    assert running.sample("modelmon_proxy_client_connections_closed_total", {"reason": "evicted"}) == 5
    assert running.sample("modelmon_proxy_client_connections_limit") == 5
    # five calls in progress are never cut for a newcomer: it is refused instead
    async with aiohttp.ClientSession() as s:
        busy = [asyncio.ensure_future(s.get(f"http://127.0.0.1:{port}/slow?delay=1")) for _ in range(5)]
        await asyncio.sleep(0.3)
        assert running.sample("modelmon_proxy_client_connections") == 5
        r, w = await _connect(port)
        w.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await asyncio.wait_for(read_response(r), 2)
        w.close()
        assert refused.status == 503 and refused.header("Retry-After") == "1"
        for call in busy:
            async with await call as resp:
                assert resp.status == 200
    assert running.sample("modelmon_proxy_client_connections_closed_total", {"reason": "limit"}) == 1
    for _, w in slow:
        w.close()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 1024))


@pytest.mark.only_engine("fast")  # the fast engine's connection limit
async def test_a_slowloris_at_the_fd_limit_leaves_normal_calls_served(upstream: TestServer,
                                                                      tmp_path: Path) -> None:
    """1,000 connections that never finish their head, against a sidecar whose fd limit is
    1024: normal inference calls are still served (before: `Too many open files`, 502)."""
    traffic, admin = free_port(), free_port()
    log = tmp_path / "sidecar.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelmon", "serve", "--upstream", str(upstream.make_url("")).rstrip("/"),
         "--host", "127.0.0.1", "--traffic-port", str(traffic), "--admin-port", str(admin)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=_low_fd_limit)
    attackers: list[asyncio.StreamWriter] = []
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/healthz", 20, proc)
        for _ in range(1000):
            try:
                _, w = await _connect(traffic)
            except OSError:
                continue
            w.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            attackers.append(w)
        await asyncio.sleep(0.2)
        ok = 0
        conn = aiohttp.TCPConnector(limit=10, force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def call() -> int:
                async with s.post(f"http://127.0.0.1:{traffic}/v1/models/m:predict",
                                  json={"instances": [[1.0]]}) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(call() for _ in range(500)), return_exceptions=True)
            ok = sum(1 for st in statuses if st == 200)
        assert ok == 500, [st for st in statuses if st != 200][:5]
        text = log.read_text()
        assert "Too many open files" not in text
        assert "proxy.max_connections lowered from 4096 to 640" in text
    finally:
        for w in attackers:
            w.close()
        stop(proc)


# --- what the adversarial review found -------------------------------------------------------


@pytest.mark.only_engine("fast")
async def test_connection_cannot_remove_the_framing_of_a_request(proxied: Running) -> None:
    """`Connection: content-length` must not send the body unframed (a smuggled request)."""
    smuggled = b"GET /status/418 HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length, host\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    seen = json.loads(response.body)
    assert bytes.fromhex(seen["body_hex"]) == smuggled  # the body, as a body
    names = [k.lower() for k, _ in seen["headers"]]
    assert "content-length" in names and "host" in names
    assert proxied.sample("modelmon_requests_total", {"model": "default", "route": "other", "code": "418"}) is None


@pytest.mark.only_engine("fast")
async def test_trailers_are_neither_forwarded_as_fields_nor_buffered_without_bound(proxied: Running) -> None:
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"GET /slow?delay=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"  # the next one waits its turn
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\nX-Trailer: evil\r\nAuthorization: Bearer x\r\n\r\n")
    await asyncio.wait_for(read_response(reader), 5)
    seen = json.loads((await asyncio.wait_for(read_response(reader), 5)).body)
    names = {k.lower() for k, _ in seen["headers"]}
    assert "x-trailer" not in names and "authorization" not in names
    assert bytes.fromhex(seen["body_hex"]) == b"abc"
    # a trailer field that never ends: 431 once past the head limit
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"1\r\na\r\n0\r\nX-T: ")
    for _ in range(8):
        writer.write(b"b" * 32768)
        await writer.drain()
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status in (431, 502)  # 502 when the upstream answered the cut body first
    assert proxied.sample("modelmon_proxy_client_connections_closed_total",
                          {"reason": "head_too_large"}) == 1


@pytest.mark.only_engine("fast")
async def test_pipelined_requests_queue_up_to_a_bound(proxied: Running) -> None:
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
    statuses = []
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            statuses.append((await asyncio.wait_for(read_response(reader), 5)).status)
    writer.close()
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert 2 <= len(statuses) - 1 <= MAX_PIPELINED + 1


@pytest.mark.only_engine("fast")
async def test_a_call_waiting_for_an_upstream_connection_times_out(upstream: TestServer,
                                                                 start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")),
                                  upstream={"max_connections": 1, "read_timeout_seconds": 0.5})
    async with aiohttp.ClientSession() as s:
        busy = asyncio.ensure_future(s.get(running.traffic_url + "/sse?n=12&delay=0.2"))
        await asyncio.sleep(0.2)  # it holds the only connection, never silent for long
        start = time.perf_counter()
        async with s.get(running.traffic_url + "/status/200") as resp:
            assert resp.status == 504
        assert time.perf_counter() - start < 2.5
        async with await busy as resp:
            await resp.read()


@pytest.mark.only_engine("fast")  # request buffering is the fast engine's
async def test_a_trickled_body_pins_no_upstream_connection(upstream: TestServer,
                                                           start_sidecar: StartSidecar) -> None:
    """A client sending its body a byte at a time holds no upstream connection until the body is
    complete (before: it held one of upstream.max_connections for as long as it trickled, and
    every other call waited for it, then got 504)."""
    running = await start_sidecar(str(upstream.make_url("")), upstream={"max_connections": 1})
    reader, writer = await _connect(running.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + b"x" * 10)
    await asyncio.sleep(0.1)
    start = time.perf_counter()
    async with running.session.post(running.traffic_url + "/echo", data=b"y" * 100) as resp:
        assert resp.status == 200
    assert time.perf_counter() - start < 1.0
    writer.write(b"z" * 10)  # the trickled body completes and is answered in full
    response = await asyncio.wait_for(read_response(reader), 3)
    writer.close()
    assert response.status == 200 and bytes.fromhex(json.loads(response.body)["body_hex"]) == b"x" * 10 + b"z" * 10


@pytest.mark.only_engine("fast")  # the fast engine's connection limit
async def test_at_the_connection_limit_a_held_body_makes_room(upstream: TestServer,
                                                              start_sidecar: StartSidecar) -> None:
    """Connections trickling bodies the model has not seen are cut for a newcomer (the most
    silent first, with 503 and Retry-After); before, they filled every slot and newcomers got 503."""
    running = await start_sidecar(str(upstream.make_url("")), proxy={"max_connections": 3})
    port = running.listeners.traffic_port
    slow = []
    for _ in range(3):
        r, w = await _connect(port)
        w.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        slow.append((r, w))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/status/200") as resp:
        assert resp.status == 200
    first = await asyncio.wait_for(read_response(slow[0][0]), 2)  # the most silent one
    assert first.status == 503 and first.header("Retry-After") == "1"
    assert await asyncio.wait_for(slow[0][0].read(), 2) == b""
    slow[1][1].write(b"x" * 97)  # the others are untouched
    second = await asyncio.wait_for(read_response(slow[1][0]), 2)
    assert second.status == 200
    assert running.sample("modelmon_proxy_client_connections_closed_total", {"reason": "evicted"}) == 1
    for _, w in slow:
        w.close()


async def _endless_upstream(first: bytes, more: bytes) -> tuple[asyncio.AbstractServer, list[int]]:
    """An upstream that answers ``/anything`` with ``first`` and then ``more`` without end (until
    cut), anything else (the health probe) with a short 200; records how many bytes it managed to
    send per ``/anything`` call."""
    sent: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"GET /anything "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        sent.append(0)
        try:
            writer.write(first)
            while sent[-1] < 64 * 1024 * 1024:
                writer.write(more)
                sent[-1] += len(more)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), sent


@pytest.mark.only_engine("fast")
@pytest.mark.parametrize(("first", "more"), [
    (b"HTTP/1.1 200 OK\r\nX-Endless: ", b"a" * 65536),  # one field that never ends
    (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 2000),  # informational responses without end
    (b"HTTP/1.1 200 OK\r\n", b"X-Many: 1\r\n" * 5000),  # fields without end
])
async def test_an_upstream_head_that_never_ends_is_a_502(start_sidecar: StartSidecar,
                                                         first: bytes, more: bytes) -> None:
    """The upstream's response head is bounded like a request head: 502 within a read of the
    limit, the connection cut (before: buffered until the upstream stopped, 64 MiB here)."""
    server, sent = await _endless_upstream(first, more)
    port = server.sockets[0].getsockname()[1]
    try:
        running = await start_sidecar(f"http://127.0.0.1:{port}")
        async with running.session.get(running.traffic_url + "/anything") as resp:
            assert resp.status == 502
            assert (await resp.json())["reason"] == "reset"
        assert len(sent) == 1 and sent[0] < 8 * 1024 * 1024  # cut early, not read to the end
        assert running.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) == 1
    finally:
        server.close()


@pytest.mark.only_engine("fast")  # the admin port is the same for both engines
async def test_the_admin_port_holds_a_bounded_number_of_connections(start_sidecar: StartSidecar) -> None:
    """The admin port holds at most ADMIN_CONNECTIONS: idle ones (or ones still sending a head)
    make room for a newcomer, oldest first, so they cannot lock out scrapes and probes; when
    every one has a request in progress the newcomer gets 503 (before: held without bound)."""
    running = await start_sidecar(None)
    port = running.listeners.admin_port
    idle = [await _connect(port) for _ in range(ADMIN_CONNECTIONS)]
    idle[-1][1].write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")  # a head never finished
    await asyncio.sleep(0.1)
    for _ in range(3):  # the first newcomer closes the oldest idle one; each is served
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
    assert await asyncio.wait_for(idle[0][0].read(), 2) == b""
    assert not idle[1][0].at_eof()
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.1)
    # every slot with a request in progress (bodies still coming): the newcomer is refused
    busy = []
    for _ in range(ADMIN_CONNECTIONS):
        r, w = await _connect(port)
        w.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{")
        busy.append((r, w))
    await asyncio.sleep(0.2)
    reader, writer = await _connect(port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    refused = await asyncio.wait_for(read_response(reader), 2)
    writer.close()
    assert refused.status == 503 and refused.header("Retry-After") == "1"
    assert await asyncio.wait_for(reader.read(), 2) == b""
    for _, w in busy:
        w.close()
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200


@pytest.mark.only_engine("fast")
@pytest.mark.parametrize("size", [MAX_HEAD_BYTES - 200, MAX_HEAD_BYTES + 2000])
async def test_the_upstream_head_limit_is_exact_whatever_the_reads(start_sidecar: StartSidecar,
                                                                     size: int) -> None:
    """A response head just under the limit passes, one just over it is a 502 -- both in one
    write, so that the head completes inside the read that crosses the limit (before: passed)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
        filler = size - len(head) - len(b"X-Fill: \r\n\r\n")
        writer.write(head + b"X-Fill: " + b"f" * filler + b"\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        running = await start_sidecar(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                                      upstream={"health_path": "/"})
        reader, writer = await asyncio.open_connection("127.0.0.1", running.listeners.traffic_port,
                                                       limit=1 << 20)  # an 80 KiB head
        writer.write(b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        assert response.status == (200 if size <= MAX_HEAD_BYTES else 502)
    finally:
        server.close()


@pytest.mark.only_engine("fast")
async def test_a_slow_upload_does_not_use_up_the_wait_for_a_connection(upstream: TestServer,
                                                                       start_sidecar: StartSidecar) -> None:
    """The pool wait (upstream.read_timeout_seconds) starts once the body is held complete, and
    neither span counts as sidecar overhead (before: a body that took longer than the timeout to
    arrive got 504 at once when the pool was busy)."""
    running = await start_sidecar(str(upstream.make_url("")),
                                  upstream={"max_connections": 1, "read_timeout_seconds": 1.0})
    reader, writer = await _connect(running.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    for byte in b"abc":
        writer.write(bytes([byte]))
        await asyncio.sleep(0.5)  # 1.5 s of upload, longer than the read timeout
    async with aiohttp.ClientSession() as s:
        busy = asyncio.ensure_future(s.get(running.traffic_url + "/slow?delay=0.6"))
        await asyncio.sleep(0.2)  # it holds the only connection
        writer.write(b"d")
        response = await asyncio.wait_for(read_response(reader), 5)
        async with await busy as resp:
            assert resp.status == 200
    writer.close()
    assert response.status == 200 and bytes.fromhex(json.loads(response.body)["body_hex"]) == b"abcd"
    overhead = running.sample("modelmon_sidecar_overhead_seconds_sum", {"model": "default", "route": "other"})
    assert overhead is not None and overhead < 0.2


@pytest.mark.only_engine("fast")
@pytest.mark.parametrize("target", [b"http://[::1/a", b"http://[zz]/a", b"http://@/a", b"http://user@/a",
                                    b"http://h:99999/a", b"http:///a"])
async def test_an_absolute_target_without_a_valid_host_is_400(proxied: Running, target: bytes) -> None:
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status == 400
    assert proxied.sample("modelmon_proxy_client_connections_closed_total", {"reason": "internal_error"}) is None


@pytest.mark.only_engine("fast")
async def test_an_upgrade_request_with_a_body_is_400(proxied: Running) -> None:
    """llhttp reads past an upgrade's head as the new protocol, so its body could never be
    forwarded (before: the upstream waited for it, and the client got 504 after the read timeout)."""
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                 b"Content-Length: 5\r\n\r\nhello")
    response = await asyncio.wait_for(read_response(reader), 3)
    writer.close()
    assert response.status == 400
    # without a body, an upgrade request is still forwarded (without its Upgrade field)
    reader, writer = await _connect(proxied.listeners.traffic_port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 3)
    writer.close()
    assert response.status == 200
    assert "upgrade" not in {k.lower() for k, _ in json.loads(response.body)["headers"]}
