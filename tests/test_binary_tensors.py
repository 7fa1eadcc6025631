"""The binary tensor data extension (Triton's and KServe's HTTP/REST extension, the default of
NVIDIA's ``tritonclient`` for NumPy inputs), end to end through both proxy engines.

Spec: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
-- a body whose ``Inference-Header-Content-Length`` is N is an N-byte JSON object followed by
the raw bytes of every tensor with ``parameters.binary_data_size``, in the JSON's order.

The requests are built by ``tritonclient.http`` (2.73, its aiohttp client and its gevent client)
from NumPy arrays, once as binary and once as the JSON form of the same arrays
(``set_data_from_numpy(binary_data=False)``); the model server below reads and answers both
forms with tritonclient's own (de)serialisers, and tritonclient parses its answers. A binary
exchange must leave exactly the state its JSON form leaves: the same bins, data-quality counts,
rows analysed, payload errors and label joins. (KServe's ``InferenceRESTClient`` sends the same
extension; the ``kserve`` package pulls in some 50 packages, grpcio and pandas among them, so
tritonclient's client stands for both.)
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_aio
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from modelmon.analysis.queue import Exchange, decode_body
from modelmon.protocols import Extractor
from modelmon.reference.profile import Profile, categorical_feature, numeric_feature
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

pytestmark = pytest.mark.engines

HEADER = "Inference-Header-Content-Length"
V2 = "/v2/models/{model}/infer"


# --- a small Open Inference Protocol model server that speaks the binary extension -------------

def read_message(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A request (or response) body -> its JSON object and its tensors as NumPy arrays."""
    if header_length is None:
        header, raw = json.loads(body), b""
    else:
        n = int(header_length)
        header, raw = json.loads(body[:n]), body[n:]
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for t in header.get("inputs", header.get("outputs", [])):
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is None:
            dtype = object if t["datatype"] == "BYTES" else triton_to_np_dtype(t["datatype"])
            arrays[t["name"]] = np.array(t["data"], dtype=dtype).reshape(t["shape"])
            continue
        chunk = raw[offset:offset + size]
        offset += size
        if t["datatype"] == "BYTES":
            arrays[t["name"]] = deserialize_bytes_tensor(chunk).reshape(t["shape"])
        else:
            arrays[t["name"]] = np.frombuffer(chunk, dtype=triton_to_np_dtype(t["datatype"])).reshape(t["shape"])
    assert offset == len(raw), "binary_data_size does not add up"
    return header, arrays


def model_app() -> web.Application:
    """Churn model: p = sigmoid(0.05 (age - 40) + [plan == pro] + 0.5 active + 0.01 visits),
    label = [p > 0.5]. Outputs in binary when the request asks (``binary_data_output`` or an
    output's ``binary_data``), as Triton answers."""

    async def infer(request: web.Request) -> web.Response:
        header, x = read_message(await request.read(), request.headers.get(HEADER))
        age = x["age"].astype(np.float64).reshape(-1)
        pro = np.array([v in (b"pro", "pro") for v in x["plan"].reshape(-1)])
        z = 0.05 * (np.nan_to_num(age) - 40) + pro + 0.5 * x["active"].reshape(-1) + 0.01 * x["visits"].reshape(-1)
        p = (1 / (1 + np.exp(-z))).astype(np.float32)
        outputs = {"p": p, "label": (p > 0.5).astype(np.int64)}
        default = bool((header.get("parameters") or {}).get("binary_data_output", False))
        asked = {o["name"]: (o.get("parameters") or {}).get("binary_data", default)
                 for o in header.get("outputs", [])} or dict.fromkeys(outputs, default)
        tensors, tail = [], []
        for name, arr in outputs.items():
            if name not in asked:
                continue
            t: dict[str, Any] = {"name": name, "shape": list(arr.shape),
                                 "datatype": "FP32" if arr.dtype == np.float32 else "INT64"}
            if asked[name]:
                t["parameters"] = {"binary_data_size": arr.nbytes}
                tail.append(arr.tobytes())
            else:
                t["data"] = arr.tolist()
            tensors.append(t)
        head = json.dumps({"model_name": request.match_info["name"], "id": header.get("id", ""),
                           "outputs": tensors}).encode()
        if not tail:
            return web.Response(body=head, content_type="application/json")
        return web.Response(body=head + b"".join(tail), content_type="application/octet-stream",
                            headers={HEADER: str(len(head))})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/models/{name}/infer", infer)
    return app


@pytest.fixture
async def model_server() -> AsyncIterator[TestServer]:
    server = TestServer(model_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 5_000
    profile = Profile("churn", "1", n, (
        numeric_feature("age", rng.normal(40, 10, n)),
        categorical_feature("plan", rng.choice(["basic", "pro"], n, p=[0.7, 0.3]).tolist()),
        categorical_feature("active", (rng.random(n) < 0.6).tolist()),
        numeric_feature("visits", rng.poisson(12, n).astype(float)),
        numeric_feature("p", rng.random(n), role="output"),
    ))
    path = tmp_path / "profile.json"
    profile.save(path)
    return path


def config(profile_path: Path, *models: str) -> dict[str, Any]:
    return {"models": [{"name": m, "profile": str(profile_path), "task": "classification",
                        "prediction_output": "label"} for m in models],
            "drift": {"interval_seconds": 3600, "min_samples": 1}}


# Batches of 1, 3, 5 and 2 rows, with a NaN, a category the profile has not seen (non-ASCII),
# an empty string, and an age beyond the reference's range.
def batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for rows in (1, 3, 5, 2):
        out.append({
            "age": rng.normal(45, 12, (rows, 1)).astype(np.float32),
            "plan": np.array([rng.choice(["basic", "pro"]).encode() for _ in range(rows)], dtype=np.object_),
            "active": rng.random(rows) < 0.5,
            "visits": rng.poisson(12, rows).astype(np.int64),
        })
    out[1]["age"][1, 0] = np.nan
    out[2]["plan"][3] = "prémium".encode()
    out[2]["plan"][4] = b""
    out[3]["age"][0, 0] = 1000.0
    return out


DATATYPES = {"age": "FP32", "plan": "BYTES", "active": "BOOL", "visits": "INT64"}


def infer_inputs(batch: dict[str, np.ndarray], binary: bool) -> list[triton_http.InferInput]:
    inputs = []
    for name, arr in batch.items():
        inp = triton_http.InferInput(name, list(arr.shape), DATATYPES[name])
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    return inputs


async def send_all(running: Running, model: str, binary_in: bool, binary_out: bool,
                   compression: str | None = None) -> list[np.ndarray]:
    """Every batch through the sidecar with tritonclient's aiohttp client; the labels it got."""
    client = triton_aio.InferenceServerClient(running.traffic_url.removeprefix("http://"))
    labels = []
    try:
        for k, batch in enumerate(batches()):
            outputs = [triton_aio.InferRequestedOutput("p", binary_data=binary_out),
                       triton_aio.InferRequestedOutput("label", binary_data=binary_out)]
            result = await client.infer(model, infer_inputs(batch, binary_in), outputs=outputs,
                                        request_id=f"{model}-{k}", request_compression_algorithm=compression)
            labels.append(result.as_numpy("label"))
            assert result.as_numpy("p").shape == (len(batch["visits"]),)
    finally:
        await client.close()
    return labels


def state(running: Running, model: str) -> dict[str, Any]:
    """What the analysis of one model holds: drift bins, quality counts, rows, sums, rows
    analysed, payload errors and label joins."""
    analysis = running.sidecar.analysis
    drift = analysis.drift_models[model]
    return {
        "bins": drift.bins.total.tolist(),
        "quality": drift.quality.total.tolist(),
        "rows": drift.rows.total.tolist(),
        "sums": drift.sums.total.tolist() if hasattr(drift, "sums") else None,
        "analysed": dict(running.sidecar.queue.stats.analysed).get((model, "proxy"), 0),
        "payload_errors": {k[1]: v for k, v in analysis.payload_errors.items() if k[0] == model and v},
        "joins": analysis.models[model].performance.joins,
        "confusion": {k: v for k, v in analysis.models[model].performance.confusion.items() if v},
    }


async def post_labels(running: Running, labels: list[dict[str, Any]]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/labels",
                                                    data=orjson.dumps({"labels": labels})) as r:
        assert r.status == 202, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def label_every_row(running: Running, model: str, predicted: list[np.ndarray]) -> None:
    """Ground truth for every row, keyed as the sidecar keys batches: ``<payload id>:<row>``."""
    labels = []
    for k, batch_labels in enumerate(predicted):
        rows = batch_labels.reshape(-1).tolist()
        for i, label in enumerate(rows):
            key = f"{model}-{k}" if len(rows) == 1 else f"{model}-{k}:{i}"
            labels.append({"id": key, "label": int(label) if i % 2 == 0 else 1 - int(label)})
    body = await post_labels(running, labels)
    assert body["joined"] == len(labels), body


TOTAL_ROWS = 1 + 3 + 5 + 2


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (True, False), (False, True)],
                         ids=["binary-request-and-response", "binary-request", "binary-response"])
async def test_binary_exchanges_are_analysed_exactly_like_their_json_form(
    model_server: TestServer, start_sidecar: StartSidecar, profile_path: Path,
    binary_in: bool, binary_out: bool,
) -> None:
    running = await start_sidecar(str(model_server.make_url("")), **config(profile_path, "json", "bin"))
    seen: list[Exchange] = []
    offer = running.sidecar.queue.offer

    def spy(item: Any, records: int = 1) -> bool:
        seen.append(item)
        return offer(item, records)

    running.sidecar.queue.offer = spy  # type: ignore[method-assign]
    json_labels = await send_all(running, "json", False, False)
    bin_labels = await send_all(running, "bin", binary_in, binary_out)
    for a, b in zip(json_labels, bin_labels, strict=True):
        assert a.tolist() == b.tolist()  # the model answered both forms alike
    await running.drain()
    dropped = {k: v for k, v in running.sidecar.queue.stats.dropped.items() if v}
    assert dropped == {}, dropped  # was one invalid_json drop per binary request
    await label_every_row(running, "json", json_labels)
    await label_every_row(running, "bin", bin_labels)
    expected = state(running, "json")
    assert expected["analysed"] == TOTAL_ROWS and expected["payload_errors"] == {}
    assert expected["joins"] == TOTAL_ROWS
    assert sum(expected["bins"]) > 0
    assert state(running, "bin") == expected
    # Both engines hand the Inference-Header-Content-Length values over with the bodies; a JSON
    # exchange carries none.
    assert [(x.request_header_length is not None, x.response_header_length is not None) for x in seen] == (
        [(False, False)] * 4 + [(binary_in, binary_out)] * 4)


async def test_binary_requests_from_the_gevent_client_and_gzip(
    model_server: TestServer, start_sidecar: StartSidecar, profile_path: Path,
) -> None:
    """tritonclient's default (gevent) client, and its gzip-compressed binary requests (the
    Inference-Header-Content-Length counts the JSON before compression)."""
    running = await start_sidecar(str(model_server.make_url("")), **config(profile_path, "json", "bin", "gz"))
    await send_all(running, "json", False, False)
    await send_all(running, "gz", True, True, compression="gzip")

    def gevent_client() -> None:
        client = triton_http.InferenceServerClient(running.traffic_url.removeprefix("http://"))
        try:
            for k, batch in enumerate(batches()):
                client.infer("bin", infer_inputs(batch, True), request_id=f"bin-{k}")  # binary outputs
        finally:
            client.close()

    await asyncio.to_thread(gevent_client)
    await running.drain()
    expected = state(running, "json")
    assert expected["analysed"] == TOTAL_ROWS
    assert state(running, "gz") == expected
    assert state(running, "bin") == expected


# --- unreadable binary messages: each a counted payload error with its reason -------------------

def binary_request(*tensors: tuple[dict[str, Any], bytes], extra: bytes = b"",
                   header_length: int | None = None) -> tuple[bytes, str]:
    """A hand-made binary request: (body, Inference-Header-Content-Length)."""
    head = json.dumps({"id": "r1", "inputs": [t for t, _ in tensors]}).encode()
    body = head + b"".join(raw for _, raw in tensors) + extra
    return body, str(len(head) if header_length is None else header_length)


FP32_2 = ({"name": "age", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
          np.array([30.5, 41.0], dtype="<f4").tobytes())
BYTES_2 = ({"name": "plan", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 16}},
           serialize_byte_tensor(np.array([b"basic", b"pro"], dtype=object)).item())  # 4+5 + 4+3 bytes


def with_size(tensor: tuple[dict[str, Any], bytes], size: Any = None, raw: bytes | None = None
              ) -> tuple[dict[str, Any], bytes]:
    """``tensor`` with other bytes and/or another binary_data_size (default: the bytes' length)."""
    raw = tensor[1] if raw is None else raw
    return {**tensor[0], "parameters": {"binary_data_size": len(raw) if size is None else size}}, raw


UNREADABLE: dict[str, tuple[bytes, str]] = {
    # the header's value is no length / 0 (raw tensor bytes without JSON) / past the body
    "binary_header_invalid": (binary_request(FP32_2)[0], "12a"),
    "binary_raw_request": (FP32_2[1], "0"),
    "binary_truncated": binary_request(FP32_2, header_length=10_000),
    "binary_json_invalid": binary_request(FP32_2, header_length=20),
    # sizes that do not add up: bytes left over, or a size past the end of the body
    "binary_length_mismatch": binary_request(FP32_2, BYTES_2, extra=b"\0\0"),
    "binary_size_invalid": binary_request(with_size(FP32_2, -8), BYTES_2),
    # a binary_data_size that disagrees with the shape
    "binary_size_mismatch": binary_request(with_size(FP32_2, 4, FP32_2[1][:4]), BYTES_2),
    # a BYTES element that is not UTF-8 text (its JSON form could not carry it either)
    "bytes_not_utf8": binary_request(FP32_2, with_size(BYTES_2, raw=b"\x05\0\0\0basic\x04\0\0\0\xff\xfe\xfd\xfc")),
    # an unknown datatype
    "bad_datatype": binary_request(({**FP32_2[0], "datatype": "FLOAT32"}, FP32_2[1]), BYTES_2),
    # BOOL bytes other than 0 and 1
    "bad_tensor_data": binary_request(({"name": "active", "shape": [2], "datatype": "BOOL",
                                        "parameters": {"binary_data_size": 2}}, b"\x01\x02")),
}
UNREADABLE["binary_truncated (a tensor past the end)"] = (
    binary_request(FP32_2, BYTES_2)[0][:-3], binary_request(FP32_2, BYTES_2)[1])
# BYTES elements whose length prefixes run past binary_data_size, or leave bytes over
UNREADABLE["binary_size_mismatch (BYTES prefix past the end)"] = binary_request(
    FP32_2, with_size(BYTES_2, raw=b"\x05\0\0\0basic\x09\0\0\0pro"))
UNREADABLE["binary_size_mismatch (BYTES bytes left over)"] = binary_request(
    FP32_2, with_size(BYTES_2, raw=b"\x05\0\0\0basic\x03\0\0\0pro\0\0\0\0\0"))


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_binary_requests_are_named_payload_errors(case: str) -> None:
    body, length = UNREADABLE[case]
    request = decode_body(body, "", 1 << 20, length)
    with pytest.raises(Exception) as raised:
        Extractor("auto").extract(V2, request, None)
    assert getattr(raised.value, "reason", None) == case.split(" ")[0], raised.value


def test_a_readable_binary_request_and_the_hand_made_cases_agree() -> None:
    """The hand-made tensors above are well formed when left alone (so each case breaks one thing)."""
    body, length = binary_request(FP32_2, BYTES_2)
    ex = Extractor("auto").extract(V2, decode_body(body, "", 1 << 20, length), None)
    assert ex.rows == 2 and ex.request_id == "r1"
    assert ex.inputs["age"].tolist() == [30.5, 41.0] and ex.inputs["plan"].tolist() == ["basic", "pro"]


@pytest.fixture
async def lenient_upstream() -> AsyncIterator[TestServer]:
    """A model server that answers 200 whatever it is sent (it never reads the tensors);
    with ?bad_response=1 a binary response whose output's bytes run past the body."""
    upstream_app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        if request.query.get("bad_response"):  # FP32 [2] output with 4 bytes missing
            head = json.dumps({"outputs": [{"name": "p", "shape": [2], "datatype": "FP32",
                                            "parameters": {"binary_data_size": 8}}]}).encode()
            return web.Response(body=head + b"\0\0\0\0", headers={HEADER: str(len(head))})
        return web.json_response({"outputs": []})

    upstream_app.router.add_post("/v2/models/{name}/infer", ok)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    yield upstream
    await upstream.close()


async def test_unreadable_binary_messages_are_counted_through_the_sidecar(
    lenient_upstream: TestServer, start_sidecar: StartSidecar, profile_path: Path,
) -> None:
    """Sent through the proxy (the upstream never reads them: it answers 200 whatever comes),
    each unreadable request is one payload error under its reason, and nothing is dropped as
    invalid JSON; a response whose binary part does not add up costs its outputs only."""
    running = await start_sidecar(str(lenient_upstream.make_url("")), **config(profile_path, "m"))
    cases = sorted(UNREADABLE)
    for case in cases:
        body, length = UNREADABLE[case]
        async with running.session.post(running.traffic_url + "/v2/models/m/infer", data=body,
                                        headers={HEADER: length}) as r:
            assert r.status == 200
    good, length = binary_request(FP32_2, BYTES_2)
    async with running.session.post(running.traffic_url + "/v2/models/m/infer?bad_response=1",
                                    data=good, headers={HEADER: length}) as r:
        assert r.status == 200
    await running.drain()
    errors = state(running, "m")["payload_errors"]
    expected: dict[str, int] = {}
    for case in cases:
        expected[case.split(" ")[0]] = expected.get(case.split(" ")[0], 0) + 1
    expected["binary_truncated"] += 1  # the response: its output's bytes run past the body
    assert errors == expected
    assert {k: v for k, v in running.sidecar.queue.stats.dropped.items() if v} == {}
    # The readable request with the unreadable response still counts its rows.
    assert state(running, "m")["rows"][0] == 2


# --- datatypes beyond the end-to-end model: each as its JSON form reads --------------------------

def both_forms(arrays: dict[str, tuple[str, np.ndarray]]) -> tuple[Any, Any]:
    """The same tensors as tritonclient sends them in binary and in JSON, decoded as the
    pipeline decodes them, then extracted."""
    results = []
    for binary in (True, False):
        inputs = []
        for name, (datatype, arr) in arrays.items():
            inp = triton_http.InferInput(name, list(arr.shape), datatype)
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        body, json_size = _get_inference_request(inputs, "rid", None, 0, False, False, 0, None, None)
        assert (json_size is not None) == binary
        request = decode_body(body, "", 1 << 20, None if json_size is None else str(json_size))
        results.append(Extractor("auto").extract(V2, request, None))
    return results[0], results[1]


def plain(column: Any) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in (column.tolist() if hasattr(column, "tolist") else column)]


def test_every_datatype_in_binary_reads_as_its_json_form() -> None:
    rng = np.random.default_rng(3)
    arrays = {
        "u8": ("UINT8", np.array([0, 7, 255], dtype=np.uint8)),
        "u16": ("UINT16", np.array([0, 1, 65535], dtype=np.uint16)),
        "u32": ("UINT32", np.array([0, 1, 2**32 - 1], dtype=np.uint32)),
        "u64": ("UINT64", np.array([0, 2**53 + 1, 2**63 - 1], dtype=np.uint64)),
        "i8": ("INT8", np.array([-128, 0, 127], dtype=np.int8)),
        "i16": ("INT16", np.array([-32768, 5, 32767], dtype=np.int16)),
        "i32": ("INT32", np.array([-(2**31), 5, 2**31 - 1], dtype=np.int32)),
        "i64": ("INT64", np.array([-(2**63), 2**53 + 1, 2**63 - 1], dtype=np.int64)),
        "f16": ("FP16", np.array([0.1, -65504, np.inf], dtype=np.float16)),
        "f32": ("FP32", rng.normal(0, 1e30, 3).astype(np.float32)),
        "f64": ("FP64", np.array([1e-300, np.pi, -0.0])),
        "flag": ("BOOL", np.array([True, False, True])),
        "text": ("BYTES", np.array(["naïve".encode(), b"", "日本".encode()], dtype=np.object_)),
        "wide": ("FP32", rng.random((3, 2)).astype(np.float32)),  # [n, k]: k positional columns
    }
    binary, as_json = both_forms(arrays)
    assert binary.rows == as_json.rows == 3
    assert binary.request_id == as_json.request_id == "rid"
    assert binary.inputs.keys() == as_json.inputs.keys()
    for name in as_json.inputs:
        b, j = plain(binary.inputs[name]), plain(as_json.inputs[name])
        assert [type(v) for v in b] == [type(v) for v in j], name
        assert b == j, name
    assert [plain(c) for c in binary.positional] == [plain(c) for c in as_json.positional]


def test_bf16_tensors_in_binary_read_as_their_values() -> None:
    """BF16 goes in binary only (tritonclient refuses its JSON form): each value is the upper
    half of a float32, read as that float."""
    import ml_dtypes

    values = np.array([[1.5], [-0.00390625], [3.0e38]], dtype=ml_dtypes.bfloat16)
    inp = triton_http.InferInput("x", [3, 1], "BF16")
    inp.set_data_from_numpy(values, binary_data=True)
    body, json_size = _get_inference_request([inp], "", None, 0, False, False, 0, None, None)
    ex = Extractor("auto").extract(V2, decode_body(body, "", 1 << 20, str(json_size)), None)
    assert plain(ex.inputs["x"]) == values.astype(np.float64).reshape(-1).tolist()
    assert not math.isnan(plain(ex.inputs["x"])[2])


def test_a_gzipped_binary_body_is_inflated_before_it_is_split() -> None:
    body, length = binary_request(FP32_2, BYTES_2)
    ex = Extractor("auto").extract(V2, decode_body(gzip.compress(body), "gzip", 1 << 20, length), None)
    assert ex.inputs["plan"].tolist() == ["basic", "pro"]


def test_a_binary_body_under_another_protocol_is_a_named_payload_error() -> None:
    body, length = binary_request(FP32_2)
    request = decode_body(body, "", 1 << 20, length)
    with pytest.raises(Exception) as raised:
        Extractor("kserve_v1").extract(V2, request, None)
    assert getattr(raised.value, "reason", None) == "binary_unsupported_protocol"


async def test_a_length_given_twice_differently_is_no_length_on_both_engines(
    lenient_upstream: TestServer, start_sidecar: StartSidecar, profile_path: Path,
) -> None:
    """Two different Inference-Header-Content-Length values: which one splits the body? Neither
    -- a payload error on both engines (before: the fast engine took the last, aiohttp the
    first). The same value twice is one length."""
    running = await start_sidecar(str(lenient_upstream.make_url("")), **config(profile_path, "m"))
    good, length = binary_request(FP32_2, BYTES_2)
    for extra in (str(int(length) + 1), length):
        async with running.session.post(running.traffic_url + "/v2/models/m/infer", data=good,
                                        headers=[(HEADER, length), (HEADER, extra)]) as r:
            assert r.status == 200
    await running.drain()
    assert state(running, "m")["payload_errors"] == {"binary_header_invalid": 1}
    assert state(running, "m")["rows"][0] == 2  # the request with one length, twice
