"""``modelmon demo``: model server (subprocess) + sidecar + traffic, on embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from ..config import Config, load_config
from ..sidecar.listeners import serve
from .model_server import MODEL_NAME, MODEL_VERSION, prepare_model, training_profile
from .traffic import generate

log = logging.getLogger("modelmon.demo")


def demo_config(model_dir: Path, pid_file: Path, profile: Path, host: str, traffic_port: int,
                admin_port: int, model_port: int, extra_models: tuple[dict[str, Any], ...] = ()
                ) -> Config:
    """The demo's sidecar config; ``extra_models`` (config dicts) join the demo's model (the
    dashboards' live test adds a pushed regression model)."""
    return load_config(overrides={
        "server": {"host": host, "traffic_port": traffic_port, "admin_port": admin_port,
                   "shutdown_grace_seconds": 5},
        "upstream": {"url": f"http://{host}:{model_port}", "probe_interval_seconds": 2},
        "models": [{"name": MODEL_NAME, "version": MODEL_VERSION, "artifact_path": str(model_dir),
                    "profile": str(profile), "prediction_output": "class", "task": "classification",
                    "positive_class": "1", "segments": ["region"]}, *extra_models],
        "labels": {"window_seconds": 120, "sub_windows": 12},
        "resources": {"pid_file": str(pid_file), "interval_seconds": 2},
        # A short window so the demo's drift shows within a minute or two.
        "drift": {"window_seconds": 120, "sub_windows": 12, "interval_seconds": 2},
    })


async def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready within {timeout:.0f}s")
            await asyncio.sleep(0.1)


async def run_demo(duration: float | None, rps: float, host: str = "127.0.0.1",
                   traffic_port: int = 8000, admin_port: int = 9400, model_port: int = 8080,
                   drift_after: float | None = 60.0) -> int:
    with tempfile.TemporaryDirectory(prefix="modelmon-demo-") as tmp:
        model_dir, pid_file = Path(tmp) / "model", Path(tmp) / "model.pid"
        profile = Path(tmp) / "profile.json"
        prepare_model(model_dir)
        training_profile().save(profile)
        model = subprocess.Popen(
            [sys.executable, "-m", "modelmon.demo.model_server", "--host", host,
             "--port", str(model_port), "--model-dir", str(model_dir), "--pid-file", str(pid_file)],
        )
        stop = asyncio.Event()
        sidecar = asyncio.create_task(serve(
            demo_config(model_dir, pid_file, profile, host, traffic_port, admin_port, model_port), stop))
        try:
            await _wait_ready(f"http://{host}:{model_port}/v2/health/ready", 30)
            await _wait_ready(f"http://{host}:{admin_port}/readyz", 30)
            print(f"""
modelmon demo is running
  model server      http://{host}:{model_port}   (KServe V1 and V2, model '{MODEL_NAME}')
  sidecar (proxy)   http://{host}:{traffic_port}   -> the model server
  metrics           http://{host}:{admin_port}/metrics
  health            http://{host}:{admin_port}/healthz  http://{host}:{admin_port}/readyz
  traffic           {rps:g} requests/s{'' if duration is None else f' for {duration:g}s'}  (Ctrl-C to stop)
  drift             {'off' if drift_after is None else f'inputs drift and carry NaNs after {drift_after:g}s'}
  labels            the true outcome of each prediction, 3-15 s later, to POST /v1/labels
  try               curl -s http://{host}:{admin_port}/metrics | grep -E 'drift_det|missing_ratio|accuracy'
""", flush=True)
            traffic = asyncio.create_task(generate(f"http://{host}:{traffic_port}", rps, duration,
                                                   drift_after=drift_after,
                                                   admin_url=f"http://{host}:{admin_port}"))
            done, _ = await asyncio.wait({traffic, sidecar}, return_when=asyncio.FIRST_COMPLETED)
            if sidecar in done:  # Ctrl-C / SIGTERM stopped the sidecar
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await traffic
                sidecar.result()  # re-raise if it stopped on an error
                return 0
            statuses = traffic.result()
            print(f"traffic done: responses by status {dict(statuses)}", flush=True)
            return 0 if statuses and set(statuses) <= {200} else 1
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await sidecar
            model.terminate()
            try:
                model.wait(5)
            except subprocess.TimeoutExpired:
                model.kill()
