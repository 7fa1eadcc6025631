"""Demo traffic: KServe V1 and V2 inference requests through the sidecar, then delayed labels.

After ``drift_after`` seconds the world changes: the amount the clients send is miscalibrated
(+1 std), ages go missing, tenures arrive as NaN — and the outcomes still follow the true
amounts, so the model's accuracy drops once the labels come in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import numpy as np
import orjson

from .model import FEATURES, STDS, sample_features, true_labels
from .model_server import MODEL_NAME

log = logging.getLogger("modelmon.demo")
REGIONS = ("eu", "us", "apac")
LABEL_DELAY = (3.0, 15.0)  # seconds between a prediction and its label, uniform


def v1_request(rows: list[list[float | None]], regions: list[str]) -> bytes:
    """Rows as objects, with a region the model ignores but the sidecar segments by.
    (NaN is not JSON; Python clients send it anyway, so the demo does too.)"""
    instances = [{**dict(zip(FEATURES, row, strict=True)), "region": region}
                 for row, region in zip(rows, regions, strict=True)]
    return json.dumps({"instances": instances}).encode()


def v2_request(rows: np.ndarray, request_id: str) -> bytes:
    return orjson.dumps({
        "id": request_id,
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                    "data": rows.ravel()}],
    }, option=orjson.OPT_SERIALIZE_NUMPY)


def corrupt(rows: np.ndarray, rng: np.random.Generator) -> list[list[float | None]]:
    """The drifted phase: amounts shifted up by one standard deviation, ages missing 10% of
    the time (as JSON null), and now and then a NaN tenure."""
    shifted = rows.copy()
    shifted[:, 0] += STDS[0]
    out: list[list[float | None]] = shifted.tolist()
    for row in out:
        if rng.random() < 0.10:
            row[1] = None
        if rng.random() < 0.05:
            row[2] = float("nan")
    return out


class LabelSender:
    """Posts each prediction's true outcome to /v1/labels after a random delay."""

    def __init__(self, session: aiohttp.ClientSession, admin_url: str, rng: np.random.Generator) -> None:
        self._session = session
        self._url = admin_url.rstrip("/") + "/v1/labels"
        self._rng = rng
        self._due: list[tuple[float, dict[str, Any]]] = []
        self.sent = 0

    def schedule(self, request_id: str, labels: np.ndarray) -> None:
        due = time.monotonic() + float(self._rng.uniform(*LABEL_DELAY))
        if len(labels) == 1:
            self._due.append((due, {"id": request_id, "label": int(labels[0])}))
        else:  # rows of a batch are joined as "<id>:<row>"
            self._due.extend((due, {"id": f"{request_id}:{i}", "label": int(y)})
                             for i, y in enumerate(labels))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.flush(time.monotonic())

    async def flush(self, now: float) -> None:
        ready = [label for due, label in self._due if due <= now]
        if not ready:
            return
        self._due = [(due, label) for due, label in self._due if due > now]
        try:
            async with self._session.post(self._url, json={"labels": ready}) as resp:
                await resp.read()
                self.sent += len(ready)
        except aiohttp.ClientError as exc:
            log.warning("demo labels not sent: %s", exc)


async def generate(base_url: str, rps: float, duration: float | None, seed: int = 1,
                   drift_after: float | None = None, admin_url: str | None = None) -> Counter[int]:
    """Send about ``rps`` requests per second for ``duration`` seconds (forever if None), and,
    with ``admin_url``, the true labels a few seconds later. Returns the count of responses by
    status (0 for connection errors)."""
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    announced = False
    statuses: Counter[int] = Counter()
    interval = 1.0 / rps
    deadline = None if duration is None else time.monotonic() + duration
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url) as session, aiohttp.ClientSession() as admin:
        labels = LabelSender(admin, admin_url, rng) if admin_url else None
        sender = asyncio.create_task(labels.run()) if labels else None
        i = 0
        next_at = time.monotonic()
        try:
            while deadline is None or time.monotonic() < deadline:
                rows = sample_features(rng, int(rng.integers(1, 9)))
                outcomes = true_labels(rng, rows)  # the truth follows the real inputs
                drifted = drift_after is not None and time.monotonic() - started >= drift_after
                if drifted and not announced:
                    print("demo: inputs now drift (amount +1 std) and carry missing values", flush=True)
                    announced = True
                regions = [str(rng.choice(REGIONS, p=[0.5, 0.3, 0.2])) for _ in range(len(rows))]
                if drifted:
                    path, body = f"/v1/models/{MODEL_NAME}:predict", v1_request(corrupt(rows, rng), regions)
                elif i % 2 == 0:
                    path, body = f"/v1/models/{MODEL_NAME}:predict", v1_request(rows.tolist(), regions)
                else:
                    path, body = f"/v2/models/{MODEL_NAME}/infer", v2_request(rows, f"req-{i}")
                try:
                    async with session.post(path, data=body, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                        request_id = resp.headers.get("X-Request-ID")
                    if labels and request_id and resp.status == 200:
                        labels.schedule(request_id, outcomes)
                except aiohttp.ClientError as exc:
                    statuses[0] += 1
                    log.warning("demo request failed: %s", exc)
                i += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
    return statuses
