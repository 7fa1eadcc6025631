"""Pass-through fidelity and failure handling of the proxy, against a real upstream."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import socket
import time

import aiohttp
import pytest
from conftest import RAW_RESPONSES, RawUpstream, Running, StartSidecar, read_response
from modelmon.proxy.aiohttp_engine import HOP_BY_HOP, forwardable
from modelmon.proxy.fast.wire import P_CLIENT
from multidict import CIMultiDict, CIMultiDictProxy

pytestmark = pytest.mark.engines  # every test that starts a sidecar runs on both proxy engines


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_path_query_headers_and_body_pass_through(proxied: Running, method: str) -> None:
    body = os.urandom(300) if method not in ("GET", "OPTIONS") else b""
    async with proxied.session.request(
        method, proxied.traffic_url + "/echo/a%2Fb/c?x=1&x=2&y=%20z",
        data=body or None,
        headers={"X-Custom": "kept", "Authorization": "Bearer t", "Content-Type": "application/x-thing"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Upstream"] == "yes"
        assert resp.headers["Set-Cookie"] == "a=1"
        seen = await resp.json()
    assert seen["method"] == method
    assert seen["path_qs"] == "/echo/a%2Fb/c?x=1&x=2&y=%20z"  # encoded path and query untouched
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-custom"] == "kept"
    assert headers["authorization"] == "Bearer t"
    assert headers["content-type"] == "application/x-thing"
    assert bytes.fromhex(seen["body_hex"]) == body


async def test_client_headers_are_not_added_to(proxied: Running) -> None:
    """The proxy must not invent Accept/User-Agent/Content-Type the client did not send."""
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent", "Accept", "Accept-Encoding"]) as s, \
            s.post(proxied.traffic_url + "/echo", data=b"raw",
                   skip_auto_headers=["Content-Type"]) as resp:
        seen = await resp.json()
    names = {k.lower() for k, _ in seen["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_hop_by_hop_headers_are_dropped(proxied: Running) -> None:
    async with proxied.session.get(
        proxied.traffic_url + "/echo",
        headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "TE": "trailers",
                 "Proxy-Authorization": "x", "X-End-To-End": "2"},
    ) as resp:
        seen = await resp.json()
    names = {k.lower() for k, _ in seen["headers"]}
    assert "x-secret-hop" not in names
    assert "te" not in names and "proxy-authorization" not in names
    assert "x-end-to-end" in names


def test_forwardable_drops_connection_listed_fields() -> None:
    headers = CIMultiDictProxy(CIMultiDict([
        ("Connection", "close, X-A"), ("X-A", "1"), ("Keep-Alive", "5"), ("X-B", "2"), ("X-B", "3"),
    ]))
    out = forwardable(headers)
    assert list(out.items()) == [("X-B", "2"), ("X-B", "3")]
    assert "transfer-encoding" in HOP_BY_HOP and "upgrade" in HOP_BY_HOP


@pytest.mark.parametrize("code", [200, 201, 204, 301, 304, 400, 404, 418, 500, 503])
async def test_status_codes_pass_through(proxied: Running, code: int) -> None:
    async with proxied.session.get(proxied.traffic_url + f"/status/{code}", allow_redirects=False) as resp:
        assert resp.status == code
        assert resp.headers["X-Code"] == str(code)
        body = await resp.read()
    assert body == (b"" if code in (204, 304) else f"status {code}".encode())
    assert proxied.sample("modelmon_requests_total",
                          {"model": "default", "route": "other", "code": str(code)}) == 1


async def test_head_keeps_content_length(proxied: Running) -> None:
    async with proxied.session.head(proxied.traffic_url + "/binary?size=5000") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "5000"
        assert await resp.read() == b""


@pytest.mark.parametrize("size", [0, 1, 1000, 300_000, 8 * 1024 * 1024])
async def test_binary_bodies_both_ways(proxied: Running, size: int) -> None:
    async with proxied.session.get(proxied.traffic_url + f"/binary?size={size}") as resp:
        body = await resp.read()
    assert body == bytes(i % 251 for i in range(size))
    payload = os.urandom(size)
    async with proxied.session.post(proxied.traffic_url + "/echo", data=payload) as resp:
        seen = await resp.json()
    assert bytes.fromhex(seen["body_hex"]) == payload


async def test_chunked_request_body_streams_through(proxied: Running) -> None:
    parts = [os.urandom(50_000) for _ in range(5)]

    async def gen():  # type: ignore[no-untyped-def]
        for p in parts:
            yield p

    async with proxied.session.post(proxied.traffic_url + "/echo", data=gen()) as resp:
        seen = await resp.json()
    assert bytes.fromhex(seen["body_hex"]) == b"".join(parts)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers.get("transfer-encoding") == "chunked"


async def test_chunked_response_streams(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/chunked?n=6&size=1000") as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        body = await resp.read()
    assert body == b"".join(bytes([65 + i]) * 1000 for i in range(6))


async def test_sse_events_arrive_before_the_stream_ends(proxied: Running) -> None:
    loop = asyncio.get_running_loop()
    async with proxied.session.get(proxied.traffic_url + "/sse?n=3&delay=0.3") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        start = loop.time()
        first = await resp.content.readuntil(b"\n\n")
        first_at = loop.time() - start
        rest = await resp.read()
    assert first == b"data: event 0\n\n"
    assert first_at < 0.25, "the first event was held back until the stream ended"
    assert rest == b"data: event 1\n\ndata: event 2\n\n"


async def test_compressed_response_passes_through_still_compressed(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/gzip") as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        body = await resp.read()
    assert gzip.decompress(body) == b'{"predictions": [1]}'


async def test_compressed_request_body_is_not_decoded(proxied: Running) -> None:
    raw = gzip.compress(b"hello")
    async with proxied.session.post(proxied.traffic_url + "/echo", data=raw,
                                    headers={"Content-Encoding": "gzip"}) as resp:
        seen = await resp.json()
    assert bytes.fromhex(seen["body_hex"]) == raw


async def test_upstream_down_gives_502_with_reason(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar("http://127.0.0.1:1")  # nothing listens on port 1
    async with running.session.post(running.traffic_url + "/v2/models/m/infer", data=b"{}") as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["error"] == "upstream_unavailable" and body["reason"] == "connect"
    assert running.sample("modelmon_upstream_errors_total", {"model": "m", "reason": "connect"}) == 1
    assert running.sample("modelmon_requests_total",
                          {"model": "m", "route": "/v2/models/{model}/infer", "code": "502"}) == 1


async def test_slow_upstream_gives_504(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/slow?delay=3") as resp:  # read timeout 2s
        assert resp.status == 504
        body = await resp.json()
    assert body["reason"] == "timeout"
    assert proxied.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "timeout"}) == 1


async def test_upstream_reset_gives_502(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/reset") as resp:
        assert resp.status == 502
        assert (await resp.json())["reason"] == "reset"
    assert proxied.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) == 1


async def test_reset_mid_stream_truncates_instead_of_faking_completion(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/midreset") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert proxied.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) == 1


async def test_proxy_keeps_serving_after_failures(proxied: Running) -> None:
    for path in ("/reset", "/slow?delay=3"):
        async with proxied.session.get(proxied.traffic_url + path) as resp:
            await resp.read()
    async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
        assert resp.status == 200


async def test_inference_metrics_and_analysis(proxied: Running) -> None:
    body = {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]}
    for _ in range(4):
        async with proxied.session.post(proxied.traffic_url + "/v2/models/iris/infer", json=body) as resp:
            assert resp.status == 200
    await proxied.drain()
    labels = {"model": "iris", "route": "/v2/models/{model}/infer"}
    assert proxied.sample("modelmon_requests_total", {**labels, "code": "200"}) == 4
    assert proxied.sample("modelmon_request_duration_seconds_count", labels) == 4
    assert proxied.sample("modelmon_sidecar_overhead_seconds_count", labels) == 4
    duration = proxied.sample("modelmon_request_duration_seconds_sum", labels)
    overhead = proxied.sample("modelmon_sidecar_overhead_seconds_sum", labels)
    assert duration is not None and overhead is not None and 0 < overhead < duration
    assert proxied.sample("modelmon_analysis_records_total", {"model": "iris", "source": "proxy"}) == 12
    assert proxied.sample("modelmon_model_last_prediction_timestamp_seconds", {"model": "iris"}) > 0
    assert proxied.sample("modelmon_requests_in_flight", {"model": "iris"}) == 0


async def test_analysis_failure_never_changes_the_response(proxied: Running) -> None:
    """A body the analysis cannot parse is forwarded and answered exactly as without the sidecar."""
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict", data=b"{not json") as resp:
        via_sidecar = (resp.status, await resp.read())
    # The upstream itself rejects it with a 500 (its json.loads raises); we must relay just that.
    assert via_sidecar[0] == 500
    async with proxied.session.post(proxied.traffic_url + "/echo", data=b"\xff\xfe") as resp:
        assert resp.status == 200


async def test_unparseable_successful_exchange_is_counted_not_fatal(
    upstream, start_sidecar: StartSidecar  # type: ignore[no-untyped-def]
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), proxy={"routes": [
        {"path": "/echo", "name": "echo", "model": "m", "inference": True}]})
    async with running.session.post(running.traffic_url + "/echo", data=b"\x00garbage") as resp:
        assert resp.status == 200
        assert bytes.fromhex((await resp.json())["body_hex"]) == b"\x00garbage"
    await running.drain()
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "invalid_json"}) == 1
    # The worker is still alive and analyses the next one.
    async with running.session.post(running.traffic_url + "/echo", json={"instances": [[1], [2]]}) as resp:
        assert resp.status == 200
    await running.drain()
    assert running.sample("modelmon_analysis_records_total", {"model": "m", "source": "proxy"}) == 2


async def test_analysis_errors_from_a_buggy_analyser_are_contained(proxied: Running) -> None:
    class Exploding:
        def analyse(self, item: object) -> int:
            raise RuntimeError("boom")

    proxied.sidecar.analysers.insert(0, Exploding())
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict",
                                    json={"instances": [[1]]}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"predictions": [1]}
    await proxied.drain()
    assert proxied.sample("modelmon_analysis_dropped_records_total", {"reason": "analysis_error"}) == 1
    async with aiohttp.ClientSession() as s, s.get(proxied.admin_url + "/healthz") as resp:
        assert resp.status == 200


async def test_full_queue_drops_and_counts_without_delaying(
    upstream, start_sidecar: StartSidecar  # type: ignore[no-untyped-def]
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), analysis={"queue_size": 2})
    running.sidecar.queue.stop()  # nothing drains the queue
    for _ in range(5):
        async with running.session.post(running.traffic_url + "/v1/models/m:predict",
                                        json={"instances": [[1]]}) as resp:
            assert resp.status == 200
    assert running.sample("modelmon_analysis_queue_depth") == 2
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "queue_full"}) == 3


async def test_body_over_analysis_limit_is_proxied_but_not_analysed(
    upstream, start_sidecar: StartSidecar  # type: ignore[no-untyped-def]
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), analysis={"max_body_bytes": 1000})
    big = {"instances": [[i] for i in range(1000)]}
    async with running.session.post(running.traffic_url + "/v1/models/m:predict", json=big) as resp:
        assert resp.status == 200
        assert len((await resp.json())["predictions"]) == 1000
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "body_too_large"}) == 1


async def test_model_label_cardinality_is_bounded(
    upstream, start_sidecar: StartSidecar  # type: ignore[no-untyped-def]
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), limits={"max_models": 3},
                                  models=[{"name": "known"}])
    names = ["known", *[f"m{i}" for i in range(10)], "bad name%20with%20spaces"]
    for name in names:
        async with running.session.post(running.traffic_url + f"/v1/models/{name}:predict",
                                        json={"instances": [[1]]}) as resp:
            assert resp.status == 200
    series = {
        s.labels["model"]
        for metric in running.sidecar.registry.collect() if metric.name == "modelmon_requests"
        for s in metric.samples
    }
    assert series == {"known", "m0", "m1", "__other__"}
    assert running.sample("modelmon_requests_total", {
        "model": "__other__", "route": "/v1/models/{model}:predict", "code": "200"}) == 9


async def test_route_label_is_a_template_not_the_raw_path(proxied: Running) -> None:
    for i in range(20):
        async with proxied.session.get(proxied.traffic_url + f"/status/200?i={i}") as resp:
            await resp.read()
        async with proxied.session.get(proxied.traffic_url + f"/echo/{i}") as resp:
            await resp.read()
    routes = {
        s.labels["route"]
        for metric in proxied.sidecar.registry.collect() if metric.name == "modelmon_requests"
        for s in metric.samples
    }
    assert routes == {"other"}


async def test_keep_alive_pool_reuses_upstream_connections(proxied: Running) -> None:
    for _ in range(20):
        async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
            await resp.read()
    if proxied.engine == "fast":
        assert proxied.listeners.fast is not None
        pool = proxied.listeners.fast.pool
        # One idle pooled connection serves all sequential requests.
        assert len(pool.idle) == 1 and pool.count == 1
        return
    assert proxied.sidecar.session is not None
    connector = proxied.sidecar.session.connector
    assert connector is not None
    # One idle pooled connection serves all sequential requests.
    assert sum(len(v) for v in connector._conns.values()) == 1  # type: ignore[attr-defined]


async def test_large_streamed_body_is_not_buffered_whole(proxied: Running) -> None:
    size = 64 * 1024 * 1024
    async with proxied.session.get(proxied.traffic_url + f"/binary?size={size}") as resp:
        total = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            total += len(chunk)
    assert total == size


def test_json_fixture_sanity() -> None:
    assert json.loads('{"a": 1}') == {"a": 1}


async def test_client_hanging_up_mid_stream_is_counted_as_499(
    proxied: Running, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as s:
        resp = await s.get(proxied.traffic_url + "/sse?n=20&delay=0.05")
        await resp.content.readuntil(b"\n\n")
        resp.close()  # hang up while the sidecar is still streaming
    for _ in range(50):
        await asyncio.sleep(0.05)
        if proxied.sample("modelmon_requests_total", {"model": "default", "route": "other", "code": "499"}):
            break
    assert proxied.sample("modelmon_requests_total", {"model": "default", "route": "other", "code": "499"}) == 1
    assert "Error handling request" not in caplog.text


async def test_bodyless_inference_call_is_not_counted_as_dropped(
    upstream, start_sidecar: StartSidecar  # type: ignore[no-untyped-def]
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), proxy={"routes": [
        {"path": "/status/200", "name": "probe", "model": "m", "inference": True}]})
    async with running.session.get(running.traffic_url + "/status/200") as resp:
        assert resp.status == 200  # an inference route answering a GET without a body
    await running.drain()
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "body_too_large"}) is None
    assert running.sample("modelmon_requests_total", {"model": "m", "route": "probe", "code": "200"}) == 1


# --- raw HTTP: what aiohttp's client cannot send or check ---------------------------------------


async def raw_connect(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", running.listeners.traffic_port)


_FRAMING = sorted(path for path in RAW_RESPONSES if path.startswith("/framing/"))
# Per connection, not end to end (RFC 9110 section 7.6.1); chunked is the proxy's own framing.
_PER_HOP = {h for h in HOP_BY_HOP if h != "transfer-encoding"}


def _codings(value: str | None) -> list[str]:
    """The codings on the body: all but a final chunked (the proxy's own framing)."""
    codings = [c.strip().lower() for c in (value or "").split(",") if c.strip()]
    return codings[:-1] if codings and codings[-1] == "chunked" else codings


# aiohttp's server adds Date and Server, drops a 304's Content-Length, and its client sends a
# request's transfer codings as plain chunked: known gaps of that engine (README, Proxy mode).
@pytest.mark.only_engine("fast")
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_response_framing_matches_the_upstream_s(raw_upstream: RawUpstream,
                                                       start_sidecar: StartSidecar, method: str) -> None:
    """Each framing corner case, read directly from the upstream and through the proxy: the
    same status, reason, end-to-end fields (Content-Length included: RFC 9110 section 8.6),
    transfer codings other than chunked, and body."""
    url = await raw_upstream.start()
    running = await start_sidecar(url)
    port = int(url.rsplit(":", 1)[1])
    for path in _FRAMING:
        got = []
        for target in (port, running.listeners.traffic_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
            writer.write(b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method.encode(), path.encode()))
            resp = await asyncio.wait_for(read_response(reader, method == "HEAD"), 5)
            writer.close()
            fields = [(k.lower(), v) for k, v in resp.headers
                      if k.lower() not in _PER_HOP and k.lower() != "transfer-encoding"]
            if resp.status == 204:  # must not carry one (RFC 9110 section 8.6)
                fields = [f for f in fields if f[0] != "content-length"]

            got.append((resp.status, resp.reason, fields, _codings(resp.header("Transfer-Encoding")),
                        resp.body))
        direct, proxied_ = got
        assert proxied_ == direct, path


@pytest.mark.only_engine("fast")  # see above
async def test_request_transfer_codings_are_forwarded(raw_upstream: RawUpstream,
                                                      start_sidecar: StartSidecar) -> None:
    """A request body with a transfer coding besides chunked keeps it (RFC 9112 section 6.1)."""
    running = await start_sidecar(await raw_upstream.start())
    reader, writer = await raw_connect(running)
    writer.write(b"POST /reason HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                 b"3\r\n\x1f\x8b\x08\r\n0\r\n\r\n")
    await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    (head,) = [h for h in raw_upstream.heads if h.startswith(b"POST /reason")]
    fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line]
    assert [v.strip().lower() for k, v in fields if k.lower() == b"transfer-encoding"] == [b"gzip, chunked"]


async def test_pipelined_requests_are_answered_in_order(proxied: Running) -> None:
    reader, writer = await raw_connect(proxied)
    body = b"pipelined body"
    writer.write(
        b"GET /slow?delay=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /chunked?n=3&size=4 HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body))
    first = await read_response(reader)
    second = await read_response(reader)
    third = await read_response(reader)
    fourth = await read_response(reader)
    writer.close()
    assert (first.status, json.loads(first.body)) == (200, {"slept": True})
    seen = json.loads(second.body)
    assert second.status == 200 and seen["path_qs"] == "/echo/2" and bytes.fromhex(seen["body_hex"]) == body
    assert third.status == 204 and third.header("X-Code") == "204"
    assert fourth.status == 200 and fourth.body == b"AAAABBBBCCCC"


@pytest.mark.only_engine("fast")  # aiohttp refuses the whole connection (400): data after close
async def test_connection_close_ends_the_connection_after_its_response(proxied: Running) -> None:
    reader, writer = await raw_connect(proxied)
    writer.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                 b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    assert response.status == 200 and (response.header("Connection") or "").lower() == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed; the request after is not answered
    writer.close()


async def test_expect_100_continue_is_answered_by_the_proxy(proxied: Running) -> None:
    reader, writer = await raw_connect(proxied)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    response = await read_response(reader)
    writer.close()
    seen = json.loads(response.body)
    assert response.status == 200 and bytes.fromhex(seen["body_hex"]) == b"hello"
    assert "expect" not in {k.lower() for k, _ in seen["headers"]}  # answered here, not forwarded


async def test_http10_client_gets_a_close_delimited_stream(proxied: Running) -> None:
    reader, writer = await raw_connect(proxied)
    writer.write(b"GET /chunked?n=3&size=5 HTTP/1.0\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status == 200 and response.body == b"AAAAABBBBBCCCCC"
    assert response.header("Transfer-Encoding") is None  # HTTP/1.0 has no chunked coding


async def test_head_of_a_chunked_resource_ends_at_the_head(raw_upstream: RawUpstream,
                                                            start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(await raw_upstream.start())
    reader, writer = await raw_connect(running)
    writer.write(b"HEAD /head-chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /reason HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(read_response(reader, head_request=True), 5)
    after = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert head.status == 200 and head.header("X-Head") == "yes"
    assert (after.status, after.body) == (200, b"ok")  # no body was waited for; the connection stays usable


async def test_chunked_request_body_on_an_inference_route_is_analysed(proxied: Running) -> None:
    payload = json.dumps({"instances": [[1], [2], [3]]}).encode()

    async def gen():  # type: ignore[no-untyped-def]
        yield payload[:10]
        yield payload[10:]

    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict", data=gen()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"predictions": [1, 1, 1]}
    await proxied.drain()
    assert proxied.sample("modelmon_analysis_records_total", {"model": "m", "source": "proxy"}) == 3


async def test_generated_request_id_on_inference_routes_only(proxied: Running) -> None:
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict",
                                    json={"instances": [[1]]}) as resp:
        first = resp.headers.get("X-Request-ID")
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict",
                                    json={"instances": [[1]]}) as resp:
        second = resp.headers.get("X-Request-ID")
    assert first is not None and second is not None and first != second
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict", json={"instances": [[1]]},
                                    headers={"X-Request-ID": "client-id-1"}) as resp:
        assert resp.status == 200
        assert resp.headers.get("X-Request-ID") is None  # the client's own id is not echoed
    async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
        assert "X-Request-ID" not in resp.headers


async def test_upstream_base_path_and_host_rewrite(upstream, start_sidecar: StartSidecar) -> None:  # type: ignore[no-untyped-def]
    base = str(upstream.make_url("/echo/base")).rstrip("/")
    running = await start_sidecar(base, upstream={"preserve_host": False})
    async with running.session.get(running.traffic_url + "/a?b=1", headers={"Host": "client.example"}) as resp:
        seen = await resp.json()
    assert seen["path_qs"] == "/echo/base/a?b=1"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["host"] == f"127.0.0.1:{upstream.port}"


@pytest.mark.parametrize("preserve_host", [True, False])
async def test_an_absolute_form_target_gets_the_base_path(upstream, start_sidecar: StartSidecar,  # type: ignore[no-untyped-def]
                                                          preserve_host: bool) -> None:
    """RFC 9112 section 3.2.2: an absolute-form target is sent on in origin form under the
    upstream's path prefix; its authority replaces the Host field (before: sent as it came,
    without the prefix)."""
    base = str(upstream.make_url("/echo/base")).rstrip("/")
    running = await start_sidecar(base, upstream={"preserve_host": preserve_host})
    reader, writer = await raw_connect(running)
    writer.write(b"GET http://user@model.example:8080/a?b=1 HTTP/1.1\r\nHost: client.example\r\n"
                 b"Connection: close\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert response.status == 200
    seen = json.loads(response.body)
    assert seen["path_qs"] == "/echo/base/a?b=1"
    hosts = [v for k, v in seen["headers"] if k.lower() == "host"]
    assert hosts == (["model.example:8080"] if preserve_host else [f"127.0.0.1:{upstream.port}"])


async def test_host_header_preserved_by_default(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/echo", headers={"Host": "client.example"}) as resp:
        seen = await resp.json()
    assert {k.lower(): v for k, v in seen["headers"]}["host"] == "client.example"


async def test_upstream_connections_are_bounded(upstream, start_sidecar: StartSidecar) -> None:  # type: ignore[no-untyped-def]
    running = await start_sidecar(str(upstream.make_url("")), upstream={"max_connections": 2})
    start = time.perf_counter()

    async def call() -> int:
        async with aiohttp.ClientSession() as s, s.get(running.traffic_url + "/slow?delay=0.3") as resp:
            await resp.read()
            return resp.status

    assert await asyncio.gather(*(call() for _ in range(6))) == [200] * 6
    assert time.perf_counter() - start >= 0.85  # three waves of two
    if running.engine == "fast":
        assert running.listeners.fast is not None and running.listeners.fast.pool.count <= 2


async def test_client_hanging_up_before_the_response_is_counted_as_499(proxied: Running) -> None:
    _reader, writer = await raw_connect(proxied)
    writer.write(b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    labels = {"model": "default", "route": "other", "code": "499"}
    for _ in range(40):
        await asyncio.sleep(0.05)
        if proxied.sample("modelmon_requests_total", labels):
            break
    assert proxied.sample("modelmon_requests_total", labels) == 1
    assert proxied.sample("modelmon_requests_in_flight", {"model": "default"}) == 0
    async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
        assert resp.status == 200


async def test_response_reason_and_connection_named_fields(raw_upstream: RawUpstream,
                                                           start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(await raw_upstream.start())
    async with running.session.get(running.traffic_url + "/reason") as resp:
        assert (resp.status, resp.reason, await resp.read()) == (200, "Fine Thanks", b"ok")
    async with running.session.get(running.traffic_url + "/conn-named") as resp:
        assert await resp.read() == b"ok"
        assert resp.headers.get("X-Kept") == "2"
        assert "X-Hop" not in resp.headers and "Keep-Alive" not in resp.headers


async def test_close_delimited_response_streams_through(raw_upstream: RawUpstream,
                                                        start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(await raw_upstream.start())
    for _ in range(2):  # the upstream connection is not reused; the client's is
        async with running.session.get(running.traffic_url + "/close-delimited") as resp:
            assert resp.status == 200
            assert await resp.read() == b"first,second"
    assert running.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) is None
    assert all(served.count("/close-delimited") <= 1 for served in raw_upstream.paths)


@pytest.mark.parametrize("buffering", [False, True])
async def test_upstream_answering_before_reading_the_body(raw_upstream: RawUpstream,
                                                          start_sidecar: StartSidecar,
                                                          buffering: bool) -> None:
    running = await start_sidecar(await raw_upstream.start(), proxy={"request_buffering": buffering})
    reader, writer = await raw_connect(running)
    writer.write(b"POST /early-answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    if buffering and running.listeners.fast is not None:  # the upstream sees it once complete
        await asyncio.sleep(0.2)
        assert not [h for h in raw_upstream.heads if b"/early-answer" in h]
        writer.write(b"x" * 99000)
    response = await asyncio.wait_for(read_response(reader), 5)
    assert (response.status, response.body) == (413, b"too big!")
    if not buffering or running.listeners.fast is None:
        writer.write(b"x" * 99000)  # the rest
    writer.write(b"GET /reason HTTP/1.1\r\nHost: x\r\n\r\n")  # then another
    after = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert (after.status, after.body) == (200, b"ok")


@pytest.mark.only_engine("fast")  # aiohttp's client answers 502 here: it does not send it again
@pytest.mark.parametrize(("method", "headers", "resent"), [
    ("GET", {}, True),
    ("PUT", {}, True),  # idempotent (RFC 9110 section 9.2.2)
    ("POST", {"Idempotency-Key": "k1"}, True),
    ("POST", {}, False),  # may have reached the model: never sent twice
    ("PATCH", {}, False),
])
async def test_request_on_a_pooled_connection_the_upstream_just_closed(
    raw_upstream: RawUpstream, start_sidecar: StartSidecar, method: str, headers: dict[str, str],
    resent: bool,
) -> None:
    running = await start_sidecar(await raw_upstream.start())
    async with running.session.get(running.traffic_url + "/then-drop") as resp:
        assert (resp.status, await resp.read()) == (200, b"ok")
    async with running.session.request(method, running.traffic_url + "/reason", data=b"x" * 1000,
                                       headers=headers) as resp:
        status, body = resp.status, await resp.read()
    served = [paths for paths in raw_upstream.paths if "/then-drop" in paths or "/reason" in paths]
    heads = [h for h in raw_upstream.heads if h.startswith(method.encode() + b" /reason ")]
    if resent:
        assert (status, body) == (200, b"ok")
        assert running.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) is None
        assert served == [["/then-drop", "/reason"], ["/reason"]]  # dropped there, answered on a new one
        assert len(heads) == 2 and heads[0] == heads[1]  # byte for byte, the head once per attempt
        assert raw_upstream.bodies[-1] == b"x" * 1000  # not a second head
    else:
        assert status == 502 and json.loads(body)["reason"] == "reset"
        assert running.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) == 1
        assert served == [["/then-drop", "/reason"]] and len(heads) == 1


async def test_garbage_from_the_upstream_is_a_502(raw_upstream: RawUpstream, start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(await raw_upstream.start())
    async with running.session.get(running.traffic_url + "/garbage") as resp:
        assert resp.status == 502
        assert (await resp.json())["reason"] == "reset"
    assert running.sample("modelmon_upstream_errors_total", {"model": "default", "reason": "reset"}) == 1


# --- the fast engine's own bounds -----------------------------------------------------------


@pytest.mark.only_engine("fast")  # the fast engine's own bounds
async def test_slow_reader_pauses_the_upstream_instead_of_buffering(proxied: Running) -> None:
    assert proxied.listeners.fast is not None
    size = 32 * 1024 * 1024
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", proxied.listeners.traffic_port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /binary?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    for _ in range(200):  # read nothing until the sidecar stops reading the upstream
        await asyncio.sleep(0.05)
        (client,) = proxied.listeners.fast.clients
        call = client.active
        if client.write_paused and call is not None and call.up is not None and call.up.read.reasons & P_CLIENT:
            break
    else:
        pytest.fail("the upstream was never paused for a client that reads nothing")
    await asyncio.sleep(0.3)
    assert client.transport is not None
    buffered = client.transport.get_write_buffer_size()
    assert buffered < 1024 * 1024, f"{buffered} bytes buffered for a client that reads nothing"
    response = await asyncio.wait_for(read_response(reader), 30)
    writer.close()
    assert len(response.body) == size and response.body[:251] == bytes(range(251))


@pytest.mark.only_engine("fast")  # the fast engine's own bounds
async def test_oversized_request_heads_are_refused(proxied: Running) -> None:
    for request, status in (
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ):
        reader, writer = await raw_connect(proxied)
        writer.write(request)
        response = await asyncio.wait_for(read_response(reader), 5)
        assert response.status == status
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
        writer.close()
    async with proxied.session.get(proxied.traffic_url + "/status/200") as resp:
        assert resp.status == 200


@pytest.mark.only_engine("fast")  # the fast engine's own bounds
async def test_informational_responses_are_not_passed_on(raw_upstream: RawUpstream,
                                                         start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(await raw_upstream.start())
    reader, writer = await raw_connect(running)
    writer.write(b"GET /early-hints HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert (response.status, response.body) == (200, b"ok")


@pytest.mark.only_engine("fast")  # the fast engine's own bounds
async def test_idle_client_connections_are_closed_on_shutdown(proxied: Running) -> None:
    reader, writer = await raw_connect(proxied)
    writer.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).status == 200
    start = time.perf_counter()
    await proxied.listeners.stop()
    assert time.perf_counter() - start < 1  # nothing in flight: no grace period to wait out
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
