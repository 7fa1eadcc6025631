"""Demo traffic: a steady stream of KServe V1 and V2 inference requests through the sidecar."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import aiohttp
import numpy as np
import orjson

from .model import FEATURES, sample_features
from .model_server import MODEL_NAME

log = logging.getLogger("modelmon.demo")


def v1_request(rows: np.ndarray) -> bytes:
    return orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def v2_request(rows: np.ndarray, request_id: str) -> bytes:
    return orjson.dumps({
        "id": request_id,
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                    "data": rows.ravel()}],
    }, option=orjson.OPT_SERIALIZE_NUMPY)


async def generate(base_url: str, rps: float, duration: float | None, seed: int = 1) -> Counter[int]:
    """Send about ``rps`` requests per second for ``duration`` seconds (forever if None);
    returns the count of responses by status (0 for connection errors)."""
    rng = np.random.default_rng(seed)
    statuses: Counter[int] = Counter()
    interval = 1.0 / rps
    deadline = None if duration is None else time.monotonic() + duration
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url) as session:
        i = 0
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            rows = sample_features(rng, int(rng.integers(1, 9)))
            if i % 2 == 0:
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
