"""Delayed ground truth: the join buffer, POST /v1/labels, performance and segment metrics."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from modelmon.performance import JoinBuffer, ModelPerformance, Prediction


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def prediction(at: float, predicted: object = 1) -> Prediction:
    return ("m", predicted, at, ())


def test_label_after_prediction_joins_once() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    assert buf.add_prediction(["a"], prediction(clock.now)) is None
    outcome, found = buf.add_label("a", 1)
    assert outcome == "joined" and found is not None and found[1] == 1
    assert buf.add_label("a", 1) == ("duplicate", None)
    assert not buf.predictions and not buf.labels


def test_label_before_prediction_waits_for_it() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    assert buf.add_label("b", "cat") == ("unmatched", None)
    clock.now += 30
    waiting = buf.add_prediction(["b"], prediction(clock.now))
    assert waiting is not None and waiting[0] == "cat"
    assert not buf.labels and not buf.predictions


def test_expiry_after_ttl_on_both_sides() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 60, clock)
    buf.add_prediction(["old"], prediction(clock.now))
    buf.add_label("early", 1)
    clock.now += 61
    buf.add_prediction(["new"], prediction(clock.now))
    buf.expire()
    assert list(buf.predictions) == ["new"] and not buf.labels
    assert buf.expired[("prediction",)] == 1 and buf.expired[("label",)] == 1
    assert buf.add_label("old", 1) == ("unmatched", None)  # its prediction expired


def test_out_of_order_labels() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    for i in range(5):
        buf.add_prediction([f"r{i}"], prediction(clock.now, i))
    joined = [buf.add_label(f"r{i}", i) for i in (3, 0, 4, 1, 2)]
    assert [(o, p[1] if p else None) for o, p in joined] == \
        [("joined", 3), ("joined", 0), ("joined", 4), ("joined", 1), ("joined", 2)]


def test_shared_entry_under_two_keys_joins_once() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    buf.add_prediction(["header-id", "payload-id"], prediction(clock.now))
    assert len(buf.predictions) == 1 and len(buf.aliases) == 1
    assert buf.add_label("payload-id", 1)[0] == "joined"
    assert buf.add_label("header-id", 1) == ("duplicate", None)
    buf.add_prediction(["h2", "p2"], prediction(clock.now))
    assert buf.add_label("h2", 1)[0] == "joined"
    assert buf.add_label("p2", 1) == ("duplicate", None)


def test_memory_bound_under_a_flood_of_unmatched_ids() -> None:
    clock = Clock()
    buf = JoinBuffer(1000, 3600, clock)
    for i in range(50_000):
        buf.add_label(f"nobody-{i}", 1)
        buf.add_prediction([f"never-labelled-{i}"], prediction(clock.now))
    assert len(buf.labels) == 1000 and len(buf.predictions) == 1000
    assert buf.evicted[("label",)] == 49_000 and buf.evicted[("prediction",)] == 49_000
    # The newest survive: a label for a recent prediction still joins.
    assert buf.add_label("never-labelled-49999", 1)[0] == "joined"


def reference_classification(actual: list[str], predicted: list[str]) -> dict[str, object]:
    """Accuracy and per-class precision/recall/F1 computed independently with NumPy."""
    a, p = np.array(actual), np.array(predicted)
    out: dict[str, object] = {"accuracy": float((a == p).mean())}
    for c in sorted(set(actual) | set(predicted)):
        tp = float(((a == c) & (p == c)).sum())
        prec = tp / (p == c).sum() if (p == c).any() else None
        rec = tp / (a == c).sum() if (a == c).any() else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
        out[c] = (prec, rec, f1)
    return out


def test_classification_metrics_match_an_independent_computation() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "auto", [], 20, None, [], 10, 3600, 12, clock)
    rng = np.random.default_rng(0)
    actual = rng.choice(["a", "b", "c"], 500).tolist()
    predicted = [x if rng.random() < 0.7 else str(rng.choice(["a", "b", "c"])) for x in actual]
    for y, p in zip(actual, predicted, strict=True):
        perf.joined(prediction(clock.now, p), y, clock.now)
    w = perf.windowed()
    ref = reference_classification(actual, predicted)
    assert perf.task == "classification"
    assert w["accuracy"] == pytest.approx(ref["accuracy"])
    for c, values in w["classes"].items():
        assert values == pytest.approx(ref[c])
    assert sum(perf.confusion.values()) == 500


def test_regression_metrics_match_numpy() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "auto", [], 20, None, [], 10, 3600, 12, clock)
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 300)
    p = y + rng.normal(0.5, 1, 300)
    for yi, pi in zip(y, p, strict=True):
        perf.joined(prediction(clock.now, float(pi)), float(yi), clock.now)
    w = perf.windowed()
    assert perf.task == "regression"
    assert w["mae"] == pytest.approx(np.abs(p - y).mean())
    assert w["rmse"] == pytest.approx(math.sqrt(((p - y) ** 2).mean()))
    assert w["bias"] == pytest.approx((p - y).mean())
    assert perf.regression[("n",)] == 300


def test_performance_window_slides() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "classification", [], 20, None, [], 10, 600, 6, clock)
    perf.joined(prediction(clock.now, "a"), "b", clock.now)
    clock.now += 700
    perf.joined(prediction(clock.now, "a"), "a", clock.now)
    assert perf.windowed()["accuracy"] == 1.0  # the old miss left the window
    assert sum(perf.confusion.values()) == 2  # the counters keep everything


def test_classes_are_bounded() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "classification", ["x"], 3, None, [], 10, 600, 6, clock)
    for i in range(50):
        perf.joined(prediction(clock.now, f"c{i}"), f"c{i}", clock.now)
    labels = {k for pair in perf.confusion for k in pair}
    assert labels <= {"x", "c0", "c1", "__other__"}


# --- end to end ------------------------------------------------------------------------------


async def post_labels(running: Running, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/labels", data=body,
                                                    headers={"Content-Type": content_type}) as r:
        return r.status, await r.json()


async def test_labels_join_proxied_predictions_by_generated_id(
    upstream: TestServer, start_sidecar: StartSidecar
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), models=[{"name": "iris", "segments": ["region"],
                                                                        "positive_class": "1"}])
    ids = []
    for region in ["eu", "eu", "us"]:
        body = {"instances": [{"x": 1.0, "region": region}]}
        async with running.session.post(running.traffic_url + "/v1/models/iris:predict", json=body) as r:
            assert r.status == 200
            ids.append(r.headers["X-Request-ID"])  # generated and returned to the client
    async with running.session.post(running.traffic_url + "/v1/models/iris:predict",
                                    json={"instances": [{"x": 2.0, "region": "us"}]},
                                    headers={"X-Request-ID": "client-chosen"}) as r:
        assert r.headers.get("X-Request-ID") is None  # the client knows its own id; nothing added
    ids.append("client-chosen")
    await running.drain()
    labels = [{"id": ids[0], "label": 1}, {"id": ids[1], "label": 0}, {"id": ids[2], "label": 1},
              {"id": "client-chosen", "label": 1}, {"id": "unknown", "label": 1}, {"id": ids[0], "label": 1},
              {"label": 1}]
    status, body = await post_labels(running, orjson.dumps({"labels": labels}))
    assert status == 202
    assert (body["joined"], body["unmatched"], body["duplicate"], body["rejected"]) == (4, 1, 1, 1)
    assert "'id' is required" in body["errors"][0]["error"]
    s = running.sample
    assert s("modelmon_labels_total", {"outcome": "joined"}) == 4
    assert s("modelmon_labels_total", {"outcome": "unmatched"}) == 1
    assert s("modelmon_labels_total", {"outcome": "duplicate"}) == 1
    assert s("modelmon_labels_total", {"outcome": "invalid"}) == 1
    assert s("modelmon_labels_joined_total", {"model": "iris"}) == 4
    assert s("modelmon_label_delay_seconds_count", {"model": "iris"}) == 4
    # The upstream predicts 1 for everything: 3 of 4 correct.
    assert s("modelmon_confusion_total", {"model": "iris", "actual": "1", "predicted": "1"}) == 3
    assert s("modelmon_confusion_total", {"model": "iris", "actual": "0", "predicted": "1"}) == 1
    assert s("modelmon_classification_accuracy", {"model": "iris"}) == 0.75
    assert s("modelmon_classification_correct_total", {"model": "iris"}) == 3
    assert s("modelmon_classification_class_metric", {"model": "iris", "class": "1", "metric": "precision"}) == 0.75
    seg = {"model": "iris", "segment": "region"}
    assert s("modelmon_segment_events_total", {**seg, "value": "eu", "event": "predictions"}) == 2
    assert s("modelmon_segment_events_total", {**seg, "value": "us", "event": "positive_predictions"}) == 2
    assert s("modelmon_segment_events_total", {**seg, "value": "eu", "event": "correct"}) == 1
    assert s("modelmon_segment_events_total", {**seg, "value": "us", "event": "correct"}) == 2
    assert s("modelmon_join_buffer_entries", {"kind": "label"}) == 1  # "unknown" waits


async def test_v2_payload_ids_and_batches_join_per_row(upstream: TestServer,
                                                       start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")))
    body = {"id": "batch-7", "inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP64", "data": [1, 2, 3]}]}
    async with running.session.post(running.traffic_url + "/v2/models/reg/infer", json=body) as r:
        assert r.status == 200
    await running.drain()
    # The upstream answers 0.5 for every row; per-row keys are "<id>:<row>".
    labels = [{"id": "batch-7:0", "label": 1.5}, {"id": "batch-7:1", "label": 0.25}, {"id": "batch-7:2", "label": 0.5}]
    status, body = await post_labels(running, b"\n".join(orjson.dumps(x) for x in labels), "application/x-ndjson")
    assert status == 202 and body["joined"] == 3
    s = running.sample
    assert s("modelmon_regression_samples_total", {"model": "reg"}) == 3
    assert s("modelmon_regression_absolute_error_sum_total", {"model": "reg"}) == pytest.approx(1.0 + 0.25 + 0.0)
    assert s("modelmon_regression_squared_error_sum_total", {"model": "reg"}) == pytest.approx(1.0 + 0.0625)
    assert s("modelmon_regression_error_sum", {"model": "reg"}) == pytest.approx(-1.0 + 0.25)
    assert s("modelmon_regression_metric", {"model": "reg", "metric": "mae"}) == pytest.approx(1.25 / 3)


async def test_labels_arriving_before_their_predictions(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None)
    status, body = await post_labels(running, orjson.dumps([{"id": "r1", "label": "spam"}]))
    assert status == 202 and body["unmatched"] == 1
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", json={
            "model": "mail", "records": [{"id": "r1", "features": {"len": 3}, "prediction": "spam"}]}) as r:
        assert r.status == 202
    await running.drain()
    assert running.sample("modelmon_labels_joined_total", {"model": "mail"}) == 1
    assert running.sample("modelmon_confusion_total", {"model": "mail", "actual": "spam", "predicted": "spam"}) == 1


@pytest.mark.parametrize(("payload", "status", "error"), [
    (b"{bad", 400, "invalid_json"),
    (b'{"labels": [{"id": "a"}]}', 400, "invalid_labels"),
    (b'{"labels": [{"id": "a", "label": [1, 2]}]}', 400, "invalid_labels"),
    (b'{"labels": [{"id": "a", "label": 1, "extra": 1}]}', 400, "invalid_labels"),
    (b'{"rows": []}', 400, "invalid_batch"),
])
async def test_bad_label_batches_are_named(start_sidecar: StartSidecar, payload: bytes, status: int,
                                           error: str) -> None:
    running = await start_sidecar(None)
    got, body = await post_labels(running, payload)
    assert (got, body["error"]) == (status, error)


async def test_probability_vectors_give_argmax_classes(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None, models=[{"name": "clf", "classes": ["neg", "pos"]}])
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", json={
            "model": "clf", "records": [{"id": "p1", "features": {"x": 1}, "prediction": [0.2, 0.8]},
                                        {"id": "p2", "features": {"x": 2}, "prediction": [0.9, 0.1]}]}) as r:
        assert r.status == 202
    await running.drain()
    status, _ = await post_labels(running, orjson.dumps([{"id": "p1", "label": "pos"}, {"id": "p2", "label": "pos"}]))
    assert status == 202
    s = running.sample
    assert s("modelmon_confusion_total", {"model": "clf", "actual": "pos", "predicted": "pos"}) == 1
    assert s("modelmon_confusion_total", {"model": "clf", "actual": "pos", "predicted": "neg"}) == 1


async def test_unparseable_payloads_are_counted_by_reason(upstream: TestServer,
                                                          start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")))
    bad = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3]}]}
    async with running.session.post(running.traffic_url + "/v2/models/m/infer", json=bad) as r:
        assert r.status == 200  # the (lenient) upstream answers; the sidecar relays it untouched
    async with running.session.post(running.traffic_url + "/v1/models/m:predict", json={"instances": [[1]]}) as r:
        assert r.status == 200
    async with running.session.post(running.traffic_url + "/v1/models/m:predict", json={"rows": [1]}) as r:
        assert r.status == 400  # the upstream rejects it; the analysis counts it
    await running.drain()
    await asyncio.sleep(0)
    errors = {s.labels["reason"]: s.value for m in running.sidecar.registry.collect()
              if m.name == "modelmon_payload_errors" for s in m.samples}
    assert errors.get("tensor_shape_mismatch") == 1
    assert "no_instances" not in errors  # a 4xx response carries no prediction: not analysed


@pytest.mark.parametrize("generate", [True, False])
async def test_generated_request_id_reaches_model_and_client(upstream: TestServer, start_sidecar: StartSidecar,
                                                             generate: bool) -> None:
    running = await start_sidecar(str(upstream.make_url("")), labels={"generate_ids": generate}, proxy={
        "routes": [{"path": "/echo", "name": "echo", "model": "m"}]})
    async with running.session.post(running.traffic_url + "/echo", json={"instances": [[1]]}) as r:
        seen = {k.lower(): v for k, v in (await r.json())["headers"]}
        returned = r.headers.get("X-Request-ID")
    if generate:
        assert returned is not None and len(returned) == 32 and seen["x-request-id"] == returned
    else:
        assert returned is None and "x-request-id" not in seen
    # Non-inference routes are never touched.
    async with running.session.get(running.traffic_url + "/echo/other") as r:
        assert "X-Request-ID" not in r.headers
        assert "x-request-id" not in {k.lower() for k, _ in (await r.json())["headers"]}
