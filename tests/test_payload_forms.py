"""Payload forms the adapters do not read are counted payload errors through the running sidecar,
never nulls, NaNs or wrong-type values in the drift engine. Each form is pinned per adapter by a
golden fixture (``tests/fixtures/protocols/*/`` with an ``issue 9`` regression note); this file
shows them counted end to end under ``modelmon_payload_errors_total{reason=...}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from modelmon.drift.columns import Q
from modelmon.metrics import catalogue as cat
from modelmon.reference.profile import Profile, categorical_feature, numeric_feature


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    profile = Profile("m", "1", 1000, (
        numeric_feature("x", rng.normal(0, 1, 1000)),
        categorical_feature("image", rng.choice(["a", "b"], 1000).tolist()),
    ))
    path = tmp_path / "profile.json"
    profile.save(path)
    return path


async def post(running: Running, path: str, body: dict[str, Any]) -> None:
    async with running.session.post(running.traffic_url + path, json=body) as r:
        assert r.status == 200, await r.text()


def payload_errors(running: Running, reason: str) -> float | None:
    return running.sample(cat.PAYLOAD_ERRORS.exposed_name, {"model": "m", "reason": reason})


async def test_unread_forms_are_counted_payload_errors_and_nulls_stay_nulls(
    upstream: TestServer, start_sidecar: StartSidecar, profile_path: Path
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), models=[{"name": "m", "profile": str(profile_path)}])
    # TF Serving / KServe V1 binary values
    await post(running, "/v1/models/m:predict", {"instances": [{"image": {"b64": "aGk="}, "x": 0.5}]})
    # MLServer's base64 content type, and a tensor whose values are in shared memory
    await post(running, "/v2/models/m/infer", {"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"},
         "data": ["aGk="]}]})
    await post(running, "/v2/models/m/infer", {"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}]})
    # a JSON null among a tensor's values: one null, not a NaN
    await post(running, "/v2/models/m/infer", {"inputs": [
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [0.5, None]},
        {"name": "image", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]})
    await running.drain()
    assert payload_errors(running, "base64_value") == 2
    assert payload_errors(running, "shared_memory_tensor") == 1
    drift = running.sidecar.analysis.drift_models["m"]
    x, image = drift.position["x"], drift.position["image"]
    assert drift.quality.total[x, Q["null"]] == 1
    assert drift.quality.total[x, Q["nan"]] == 0
    assert drift.quality.total[image, Q["wrong_type"]] == 0  # no {"b64": ...} counted as a value
    assert drift.rows.total[x] == 2  # only the readable request's rows
