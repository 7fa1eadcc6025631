"""The demo model server: KServe V1 and Open Inference Protocol (V2) routes over aiohttp.

Run as ``python -m modelmon.demo.model_server --port 8080 --model-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from ..reference.profile import Feature, Profile, categorical_feature, numeric_feature
from .model import FEATURES, LogisticModel, train

MODEL_NAME = "demo"
MODEL_VERSION = "1"


class BadInput(ValueError):
    pass


def _rows(instances: Any) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise BadInput("instances must be a non-empty list")
    if isinstance(instances[0], dict):
        try:
            rows = [[r[name] for name in FEATURES] for r in instances]  # null -> NaN below
        except (KeyError, TypeError) as exc:
            raise BadInput(f"each instance needs numeric {list(FEATURES)}: {exc}") from None
    else:
        rows = instances
    try:
        x = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"instances are not numeric: {exc}") from None
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise BadInput(f"expected rows of {len(FEATURES)} features, got shape {list(x.shape)}")
    return x


def _v2_rows(payload: Any) -> np.ndarray:
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadInput("expected one input tensor")
    tensor = inputs[0]
    shape = tensor.get("shape")
    try:
        x = np.asarray(tensor.get("data"), dtype=np.float64).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"tensor data does not match shape {shape}: {exc}") from None
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise BadInput(f"expected shape [n, {len(FEATURES)}], got {shape}")
    return x


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)  # accepts NaN literals, as many Python model servers do


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        status=status, content_type="application/json")


def create_app(model: LogisticModel) -> web.Application:
    async def ready(request: web.Request) -> web.Response:
        return _json({"ready": True})

    async def v1_model(request: web.Request) -> web.Response:
        return _json({"name": MODEL_NAME, "ready": True})

    async def v2_metadata(request: web.Request) -> web.Response:
        return _json({
            "name": MODEL_NAME, "versions": [MODEL_VERSION], "platform": "numpy",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(FEATURES)]}],
            "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]},
                        {"name": "class", "datatype": "INT64", "shape": [-1]}],
        })

    async def v1_predict(request: web.Request) -> web.Response:
        try:
            payload = _loads(await request.read())
            x = _rows(payload.get("instances") if isinstance(payload, dict) else None)
        except (ValueError, BadInput) as exc:
            return _json({"error": str(exc)}, status=400)
        x = np.where(np.isnan(x), model.mean, x)  # impute missing inputs with the training mean
        p = model.predict_proba(x)
        return _json({"predictions": [{"probability": float(pi), "class": int(pi >= 0.5)} for pi in p]})

    async def v2_infer(request: web.Request) -> web.Response:
        try:
            payload = _loads(await request.read())
            x = _v2_rows(payload)
        except (ValueError, BadInput) as exc:
            return _json({"error": str(exc)}, status=400)
        p = model.predict_proba(x)
        body: dict[str, Any] = {
            "model_name": MODEL_NAME, "model_version": MODEL_VERSION,
            "outputs": [
                {"name": "probability", "datatype": "FP64", "shape": [len(p)], "data": p},
                {"name": "class", "datatype": "INT64", "shape": [len(p)],
                 "data": (p >= 0.5).astype(int)},
            ],
        }
        if isinstance(payload.get("id"), str):
            body["id"] = payload["id"]
        return _json(body)

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/health/live", ready)
    app.router.add_get(f"/v1/models/{MODEL_NAME}", v1_model)
    app.router.add_get(f"/v2/models/{MODEL_NAME}", v2_metadata)
    app.router.add_post(f"/v1/models/{MODEL_NAME}:predict", v1_predict)
    app.router.add_post(f"/v2/models/{MODEL_NAME}/infer", v2_infer)
    return app


def prepare_model(model_dir: Path) -> Path:
    """Train the demo model and save it as the artefact whose mtime is the model's age."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "model.npz"
    model, _, _ = train()
    model.save(path)
    return path


def training_profile() -> Profile:
    """The reference profile of the demo model: its training inputs and outputs."""
    model, x, y = train()
    features: list[Feature] = [numeric_feature(name, x[:, i]) for i, name in enumerate(FEATURES)]
    p = model.predict_proba(x)
    features.append(numeric_feature("probability", p, role="output"))
    features.append(categorical_feature("class", (p >= 0.5).astype(int).tolist(), role="output"))
    features.append(categorical_feature("label", y.tolist(), role="target"))
    return Profile(MODEL_NAME, MODEL_VERSION, len(x), tuple(features), source="demo training data")


def main() -> None:
    parser = argparse.ArgumentParser(description="modelmon demo model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path)
    args = parser.parse_args()
    path = args.model_dir / "model.npz"
    if not path.exists():
        prepare_model(args.model_dir)
    if args.pid_file:
        args.pid_file.write_text(str(os.getpid()))
    web.run_app(create_app(LogisticModel.load(path)), host=args.host, port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
