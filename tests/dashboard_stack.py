"""A live stack for the dashboards: the demo model server (a subprocess) behind a real sidecar,
demo traffic that drifts and carries NaNs, delayed labels, a second model (regression) whose
records and labels are pushed, and a real Prometheus scraping the sidecar every second with the
generated recording and alerting rules loaded.

Used by tests/test_dashboards.py (a short run: every panel query must return data) and by
tests/dashboard_previews.py (a longer run: the PNG previews in grafana/previews/)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml
from helpers import free_port, stop, wait_http
from modelmon.demo.model import FEATURES
from modelmon.demo.model_server import MODEL_NAME, prepare_model, training_profile
from modelmon.demo.runner import demo_config
from modelmon.demo.traffic import generate
from modelmon.mixin import ALERTS_FILE, RULES_FILE, Mixin, MixinConfig
from modelmon.reference.profile import Profile, categorical_feature, numeric_feature
from modelmon.sidecar.listeners import serve

PROMETHEUS = shutil.which("prometheus")
JOB = "modelmon"
OTHER_JOB = "other-app"
REGRESSION_MODEL = "price"
DISTRICTS = ("north", "south", "east", "west")
SHARES = (0.4, 0.3, 0.2, 0.1)


@dataclass
class Stack:
    prometheus: str  # base URL
    admin: str  # the sidecar's admin URL
    started: float  # time.time() when traffic began


def regression_profile(rng: np.random.Generator) -> Profile:
    """The pushed regression model's reference: a size, a district, and the predicted price."""
    size = rng.lognormal(4.3, 0.3, 5000)
    district = rng.choice(DISTRICTS, 5000, p=SHARES)
    return Profile(REGRESSION_MODEL, "7", 5000, (
        numeric_feature("size", size),
        categorical_feature("district", district.tolist()),
        numeric_feature("prediction", 3.0 * size, role="output"),
    ), source="dashboard test data")


async def push_regression(admin: str, rng: np.random.Generator, drift_after: float) -> None:
    """Records of the regression model every 0.2 s, its labels a few seconds later; after
    ``drift_after`` s sizes shift up, a new district appears and some sizes are NaN."""
    started = time.monotonic()
    pending: list[tuple[float, dict[str, Any]]] = []
    n = 0
    async with aiohttp.ClientSession() as s:
        while True:
            drifted = time.monotonic() - started > drift_after
            records = []
            for _ in range(8):
                size = float(rng.lognormal(4.3 + (0.3 if drifted else 0.0), 0.3))
                district = str(rng.choice([*DISTRICTS, "harbour"]) if drifted
                               else rng.choice(DISTRICTS, p=SHARES))
                prediction = 3.0 * size
                rid = f"p-{n}"
                n += 1
                features: dict[str, Any] = {"size": size if not (drifted and rng.random() < 0.1)
                                            else float("nan"), "district": district}
                records.append({"id": rid, "features": features, "prediction": prediction})
                truth = prediction + float(rng.normal(0, 10 if not drifted else 40))
                pending.append((time.monotonic() + float(rng.uniform(2, 6)), {"id": rid, "label": truth}))
            async with s.post(f"{admin}/v1/records", data=_json({"model": REGRESSION_MODEL,
                                                                 "records": records}),
                              headers={"Content-Type": "application/json"}) as r:
                await r.read()
            due = [label for at, label in pending if at <= time.monotonic()]
            pending = [(at, label) for at, label in pending if at > time.monotonic()]
            if due:
                async with s.post(f"{admin}/v1/labels",
                                  json={"model": REGRESSION_MODEL, "labels": due}) as r:
                    await r.read()
            await asyncio.sleep(0.2)


async def misbehave(traffic: str, model: str) -> None:
    """A careless client, every 2 s: a row of the wrong length (the model answers 400), a body
    that claims gzip but is not (the model answers 500), and an OIP tensor of an unknown datatype
    that the model serves anyway (a payload error the sidecar counts)."""
    url = f"{traffic}/v1/models/{model}:predict"
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.post(url, json={"instances": [[1.0, 2.0]]}) as r:
                await r.read()
            async with s.post(f"{traffic}/v2/models/{model}/infer", json={"inputs": [
                    {"name": "input-0", "shape": [1, len(FEATURES)], "datatype": "FP99",
                     "data": [1.0] * len(FEATURES)}]}) as r:
                await r.read()
            async with s.post(url, data=b'{"instances": [[1, 2, 3]]}',
                              headers={"Content-Type": "application/json",
                                       "Content-Encoding": "gzip"}) as r:
                await r.read()
            await asyncio.sleep(2)


def _json(body: Any) -> bytes:
    import json
    return json.dumps(body).encode()  # NaN as the token NaN, as Python clients send it


def prometheus_config(tmp: Path, targets: list[str], mixin: MixinConfig) -> Path:
    for name, text in Mixin(mixin).files().items():
        if name in (RULES_FILE, ALERTS_FILE):
            (tmp / name).write_text(text, encoding="utf-8")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / RULES_FILE), str(tmp / ALERTS_FILE)],
        # another job scraping the same sidecar: the boards must show only the configured one
        # (the "All" of their job variable included)
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]},
                           {"job_name": OTHER_JOB, "static_configs": [{"targets": targets}]}],
    }))
    return config


@contextlib.asynccontextmanager
async def live_stack(tmp: Path, *, drift_after: float = 5.0, rps: float = 20.0,
                     mixin: MixinConfig | None = None) -> AsyncIterator[Stack]:
    assert PROMETHEUS, "prometheus is not installed: run ./scripts/install-system-deps"
    host = "127.0.0.1"
    traffic_port, admin_port, model_port, prom_port = (free_port() for _ in range(4))
    model_dir, pid_file = tmp / "model", tmp / "model.pid"
    prepare_model(model_dir)
    training_profile().save(tmp / "profile.json")
    rng = np.random.default_rng(7)
    regression_profile(rng).save(tmp / "price.json")
    config = demo_config(model_dir, pid_file, tmp / "profile.json", host, traffic_port, admin_port,
                         model_port, extra_models=({
                             "name": REGRESSION_MODEL, "version": "7", "profile": str(tmp / "price.json"),
                             "task": "regression", "segments": ["district"],
                             "trained_at": "2026-11-01T00:00:00Z"},))
    log = (tmp / "model.log").open("wb")
    model = subprocess.Popen(
        [sys.executable, "-m", "modelmon.demo.model_server", "--host", host, "--port", str(model_port),
         "--model-dir", str(model_dir), "--pid-file", str(pid_file)],
        stdout=log, stderr=subprocess.STDOUT)
    prom_dir = tmp / "prometheus"
    prom_dir.mkdir()
    prom_config = prometheus_config(prom_dir, [f"{host}:{admin_port}"], mixin or MixinConfig())
    prom_url = f"http://{host}:{prom_port}"
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={prom_dir / 'data'}",
         f"--web.listen-address={host}:{prom_port}", "--log.level=warn"],
        stdout=(prom_dir / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
    stopped = asyncio.Event()
    sidecar = asyncio.create_task(serve(config, stopped))
    tasks: list[asyncio.Task[Any]] = []
    try:
        admin = f"http://{host}:{admin_port}"
        await asyncio.to_thread(wait_http, f"http://{host}:{model_port}/v2/health/ready", 30, model)
        await asyncio.to_thread(wait_http, f"{admin}/readyz", 30)
        await asyncio.to_thread(wait_http, f"{prom_url}/-/ready", 30, prom)
        tasks.append(asyncio.create_task(generate(f"http://{host}:{traffic_port}", rps, None,
                                                  drift_after=drift_after, admin_url=admin)))
        tasks.append(asyncio.create_task(push_regression(admin, rng, drift_after)))
        tasks.append(asyncio.create_task(misbehave(f"http://{host}:{traffic_port}", MODEL_NAME)))
        yield Stack(prom_url, admin, time.time())
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopped.set()
        with contextlib.suppress(asyncio.CancelledError):
            await sidecar
        stop(prom)
        stop(model)
        log.close()
