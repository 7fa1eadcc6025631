"""POST /v1/records: batches, NDJSON, per-record errors, limits."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from conftest import Running, StartSidecar


@pytest.fixture
async def receiver(start_sidecar: StartSidecar) -> Running:
    return await start_sidecar(None, models=[{"name": "churn"}], ingest={"max_body_bytes": 100_000,
                                                                         "max_records": 50})


async def post(running: Running, body: bytes, content_type: str = "application/json",
               query: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.post(
        running.admin_url + "/v1/records" + query, data=body, headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, await resp.json()


def rec(i: int, **extra: object) -> dict:  # type: ignore[type-arg]
    return {"features": {"x": i, "colour": "red"}, "prediction": i % 2, "id": f"r{i}", **extra}


async def test_json_batch_is_accepted_and_analysed(receiver: Running) -> None:
    batch = {"model": "churn", "records": [rec(i) for i in range(5)]}
    status, body = await post(receiver, orjson.dumps(batch))
    assert (status, body["accepted"], body["rejected"]) == (202, 5, 0)
    await receiver.drain()
    assert receiver.sample("modelmon_analysis_records_total", {"model": "churn", "source": "push"}) == 5
    assert receiver.sample("modelmon_ingest_requests_total", {"handler": "/v1/records", "code": "202"}) == 1
    assert receiver.sample("modelmon_model_last_prediction_timestamp_seconds", {"model": "churn"}) > 0


async def test_json_array_and_per_record_model(receiver: Running) -> None:
    records = [rec(0, model="a"), rec(1, model="b"), rec(2)]
    status, body = await post(receiver, orjson.dumps(records))
    assert status == 202 and body["accepted"] == 3
    await receiver.drain()
    for model in ("a", "b", "churn"):  # unnamed records go to the default (first configured) model
        assert receiver.sample("modelmon_analysis_records_total", {"model": model, "source": "push"}) == 1


async def test_ndjson_with_a_bad_line_keeps_the_good_ones(receiver: Running) -> None:
    lines = [orjson.dumps(rec(0)), b"{broken", orjson.dumps(rec(2)), b"", orjson.dumps({"nofeatures": 1})]
    status, body = await post(receiver, b"\n".join(lines), "application/x-ndjson")
    assert status == 202
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert "invalid JSON" in body["errors"][0]["error"]
    assert "unknown field" in body["errors"][1]["error"]
    assert receiver.sample("modelmon_analysis_dropped_records_total", {"reason": "invalid_record"}) == 2


@pytest.mark.parametrize(("record", "message"), [
    ("just a string", "must be an object"),
    ({"features": [1, 2]}, "'features' is required"),
    ({"prediction": 1}, "'features' is required"),
    ({"features": {}, "id": 1.5}, "'id'"),
    ({"features": {}, "timestamp": "yesterday"}, "'timestamp'"),
    ({"features": {}, "model": 3}, "'model'"),
    ({"features": {}, "labell": 1}, "unknown field"),
])
async def test_invalid_records_are_named(receiver: Running, record: object, message: str) -> None:
    status, body = await post(receiver, orjson.dumps({"records": [rec(0), record]}))
    assert status == 202
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert message in body["errors"][0]["error"]


async def test_ids_beyond_64_bits_are_rejected_saying_why(receiver: Running) -> None:
    # JSON parsers read an integer beyond 64 bits as a float, its digits rounded.
    body = (b'{"records": [{"features": {"x": 1}, "id": 123456789012345678901234567890}, '
            b'{"features": {"x": 1}, "id": -9223372036854775808}, {"features": {"x": 1}, "id": 1.5}]}')
    status, got = await post(receiver, body)
    assert (status, got["accepted"], got["rejected"]) == (202, 1, 2)
    beyond, fraction = (e["error"] for e in got["errors"])
    assert beyond.startswith("'id' is an integer beyond 64 bits (~1.2345678901234568e+29)")
    assert beyond.endswith("send it as a string")
    assert fraction == "'id' must be a string or an integer, got a number with a fraction or an exponent (1.5)"
    # 400 digits: beyond float range too (before: "a number with a fraction or an exponent (inf)")
    body = b'{"records": [{"features": {"x": 1}, "id": ' + b"9" * 400 + b"}]}"
    status, got = await post(receiver, body)
    assert status == 400
    assert got["errors"][0]["error"].startswith("'id' is an integer beyond 64 bits (beyond float range)")


async def test_all_invalid_is_400(receiver: Running) -> None:
    status, body = await post(receiver, orjson.dumps([{"x": 1}, 5]))
    assert status == 400 and body["error"] == "invalid_records" and body["rejected"] == 2


@pytest.mark.parametrize(("payload", "error"), [
    (b"{not json", "invalid_json"),
    (b'{"rows": []}', "invalid_batch"),
    (b'"hello"', "invalid_batch"),
    (b'{"records": [], "model": 5}', "invalid_batch"),
])
async def test_malformed_bodies_get_a_clear_400(receiver: Running, payload: bytes, error: str) -> None:
    status, body = await post(receiver, payload)
    assert status == 400
    assert body["error"] == error and body["detail"]
    # ... and the endpoint keeps serving.
    status, _ = await post(receiver, orjson.dumps([rec(1)]))
    assert status == 202


async def test_too_large_body_is_413(receiver: Running) -> None:
    status, body = await post(receiver, b"[" + b" " * 200_000 + b"]")
    assert status == 413 and body["error"] == "body_too_large"
    assert receiver.sample("modelmon_ingest_requests_total", {"handler": "/v1/records", "code": "413"}) == 1


async def test_too_many_records_is_413(receiver: Running) -> None:
    status, body = await post(receiver, orjson.dumps([rec(i) for i in range(51)]))
    assert status == 413 and body["error"] == "too_many_records"


async def test_full_queue_is_503_with_retry_after(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None, analysis={"queue_size": 1})
    running.sidecar.queue.stop()  # nothing drains: the queue fills
    async with aiohttp.ClientSession() as s:
        async with s.post(running.admin_url + "/v1/records", json=[rec(0)]) as resp:
            assert resp.status == 202
        async with s.post(running.admin_url + "/v1/records", json=[rec(1), rec(2)]) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            body = await resp.json()
    assert body["error"] == "queue_full" and body["dropped"] == 2
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "queue_full"}) == 2


async def test_model_from_query_and_unknown_models_fold(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None, limits={"max_models": 2})
    for i in range(5):
        status, _ = await post(running, orjson.dumps([rec(i)]), query=f"?model=tenant{i}")
        assert status == 202
    await running.drain()
    models = {s.labels["model"] for m in running.sidecar.registry.collect()
              if m.name == "modelmon_analysis_records" for s in m.samples}
    assert models == {"tenant0", "__other__"}  # "default" holds the other slot


def deep(depth: int, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("endpoint", ["/v1/records", "/v1/labels"])
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
async def test_deeply_nested_bodies_are_a_400_never_a_500(receiver: Running, endpoint: str, kind: str,
                                                          content_type: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(
        receiver.admin_url + endpoint, data=deep(10_000, kind), headers={"Content-Type": content_type}
    ) as resp:
        status, body = resp.status, await resp.json()
    assert status == 400
    if content_type == "application/json":
        assert body["error"] == "invalid_json" and "depth" in body["detail"]
    else:  # NDJSON: the line is rejected like any other bad record
        assert body["rejected"] == 1 and "invalid JSON" in body["errors"][0]["error"]
    status, _ = await post(receiver, orjson.dumps([rec(1)]))  # the endpoint keeps serving
    assert status == 202


@pytest.mark.parametrize("segments", [["s"], []], ids=["segmented", "plain"])
async def test_deeply_nested_values_in_records_are_analysed_and_their_labels_join(
    start_sidecar: StartSidecar, segments: list[str]
) -> None:
    """Values as deep as the parser takes (its limit is 1,024 levels) reach the analysis, the
    join buffer and segments: none of them may recurse on them (a repr raised RecursionError
    there, and the label that joined such a prediction got a 500)."""
    running = await start_sidecar(None, models=[{"name": "churn", "segments": segments}])
    record = (b'{"id": "r1", "features": {"x": 1, "s": ' + deep(1015) + b'}, "prediction": '
              + deep(1015, "object") + b"}")
    status, body = await post(running, b'{"model": "churn", "records": [' + record + b"]}")
    assert status == 202 and body["accepted"] == 1
    await running.drain()
    assert running.sample("modelmon_analysis_records_total", {"model": "churn", "source": "push"}) == 1
    assert running.sample("modelmon_analysis_dropped_records_total", {"reason": "analysis_error"}) is None
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/labels",
                                                    json=[{"id": "r1", "label": 1}]) as resp:
        assert resp.status == 202
        assert (await resp.json())["joined"] == 1
    # Neither an array nor an object is a class or a segment value.
    assert running.sample("modelmon_confusion_total",
                          {"model": "churn", "actual": "1", "predicted": "__other__"}) == 1
    if segments:
        assert running.sample("modelmon_segment_labels_total", {"model": "churn", "segment": "s",
                                                                "value": "__other__"}) == 1
