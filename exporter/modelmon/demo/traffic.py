"""Demo traffic: a steady stream of KServe V1 and V2 inference requests through the sidecar."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter

import aiohttp
import numpy as np
import orjson

from .model import FEATURES, STDS, sample_features
from .model_server import MODEL_NAME

log = logging.getLogger("modelmon.demo")


def v1_request(rows: np.ndarray) -> bytes:
    return orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def v1_json(rows: list[list[float | None]]) -> bytes:
    # NaN is not JSON; servers written in Python accept it, as many real clients send it.
    return json.dumps({"instances": rows}).encode()


def v2_request(rows: np.ndarray, request_id: str) -> bytes:
    return orjson.dumps({
        "id": request_id,
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                    "data": rows.ravel()}],
    }, option=orjson.OPT_SERIALIZE_NUMPY)


def corrupt(rows: np.ndarray, rng: np.random.Generator) -> list[list[float | None]]:
    """The drifted phase: amounts shifted up by one standard deviation, ages missing 10% of
    the time (as JSON null), and now and then a NaN tenure."""
    rows = rows.copy()
    rows[:, 0] += STDS[0]
    out: list[list[float | None]] = rows.tolist()
    for row in out:
        if rng.random() < 0.10:
            row[1] = None
        if rng.random() < 0.05:
            row[2] = float("nan")
    return out


async def generate(base_url: str, rps: float, duration: float | None, seed: int = 1,
                   drift_after: float | None = None) -> Counter[int]:
    """Send about ``rps`` requests per second for ``duration`` seconds (forever if None);
    after ``drift_after`` seconds the inputs drift and carry missing values. Returns the count
    of responses by status (0 for connection errors)."""
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    announced = False
    statuses: Counter[int] = Counter()
    interval = 1.0 / rps
    deadline = None if duration is None else time.monotonic() + duration
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url) as session:
        i = 0
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            rows = sample_features(rng, int(rng.integers(1, 9)))
            drifted = drift_after is not None and time.monotonic() - started >= drift_after
            if drifted and not announced:
                print("demo: inputs now drift (amount +1 std) and carry missing values", flush=True)
                announced = True
            if drifted:
                path, body = f"/v1/models/{MODEL_NAME}:predict", v1_json(corrupt(rows, rng))
            elif i % 2 == 0:
                path, body = f"/v1/models/{MODEL_NAME}:predict", v1_request(rows)
            else:
                path, body = f"/v2/models/{MODEL_NAME}/infer", v2_request(rows, f"req-{i}")
            try:
                async with session.post(path, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError as exc:
                statuses[0] += 1
                log.warning("demo request failed: %s", exc)
            i += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return statuses


__all__ = ["FEATURES", "generate"]
