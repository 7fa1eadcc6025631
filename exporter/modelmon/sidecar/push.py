"""The push API: ``POST /v1/records`` for models that cannot be proxied (or mirrored traffic),
and ``POST /v1/labels`` for delayed ground truth.

Body: a JSON object ``{"model": "m", "records": [...]}``, a JSON array of records, or NDJSON
(``Content-Type: application/x-ndjson``), one record per line. A record is an object
``{"features": {...}, "prediction": ..., "id": "...", "model": "...", "timestamp": 1.7e9}``
of which only ``features`` is required. Invalid records are rejected one by one with their
index and reason; the valid rest of the batch is accepted.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.core import Metric

from ..analysis.queue import AnalysisQueue, PushedRecords
from ..collectors.models import ModelRegistry
from ..config import IngestConfig
from ..jsondecode import JSONDecodeError, loads
from ..logs import RateLimitedLog
from ..metrics import catalogue as cat
from ..metrics.instruments import counter_vec
from .auth import BearerAuth

log = RateLimitedLog(logging.getLogger("modelmon.ingest"))

RECORD_KEYS = frozenset({"features", "prediction", "id", "model", "timestamp"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines",
                          "application/ndjson"})
MAX_ERRORS_REPORTED = 20


class BadRequest(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error


def _object_of(item: Any, what: str, known: frozenset[str]) -> str | None:
    """None if ``item`` is an object with only ``known`` fields, else the reason it is not."""
    if not isinstance(item, dict):
        return f"{what} must be an object, got {type(item).__name__}"
    unknown = item.keys() - known
    if unknown:
        return f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
    return None


def _id_type_problem(rid: Any) -> str | None:
    """Why a present ``id`` is neither a string nor an integer, or None."""
    if isinstance(rid, float) and (math.isinf(rid) or (rid.is_integer() and not -(2**63) <= rid < 2**64)):
        # JSON parsers give an integer outside -2^63..2^64-1 as a float, its digits rounded
        # (beyond float range, as infinity: 400 digits, or an Infinity literal).
        size = "beyond float range" if math.isinf(rid) else f"~{rid:.17g}"
        return (f"'id' is an integer beyond 64 bits ({size}): an integer id must lie within "
                "-2^63..2^64-1, longer ones are read as floats with their digits rounded (and "
                "would join the wrong prediction); send it as a string")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        return f"'id' must be a string or an integer, got {_json_type(rid)}"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"a number with a fraction or an exponent ({value!r})"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "an array"
    return type(value).__name__


def validate_record(record: Any) -> str | None:
    """None if ``record`` is a valid record, else the reason it is not."""
    problem = _object_of(record, "record", RECORD_KEYS)
    if problem is not None:
        return problem
    features = record.get("features")
    if not isinstance(features, dict):
        return "'features' is required and must be an object of feature name to value"
    model = record.get("model")
    if model is not None and not isinstance(model, str):
        return "'model' must be a string"
    rid = record.get("id")
    if rid is not None and (problem := _id_type_problem(rid)) is not None:
        return problem
    ts = record.get("timestamp")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)
                           or not math.isfinite(ts)):
        return "'timestamp' must be Unix seconds"
    return None


LABEL_KEYS = frozenset({"id", "label", "model", "timestamp"})
# A label string longer than this is rejected. Any label is compared with its prediction by
# value; the join buffer keeps text longer than a class name (63) only as its digest.
MAX_LABEL_CHARS = 1024


def validate_label(item: Any) -> str | None:
    """None if ``item`` is a valid ``{"id": ..., "label": ...}``, else the reason it is not."""
    problem = _object_of(item, "label", LABEL_KEYS)
    if problem is not None:
        return problem
    rid = item.get("id")
    if rid is not None and (problem := _id_type_problem(rid)) is not None:
        return problem
    if rid is None or rid == "" or len(str(rid)) > 256:
        return "'id' is required: the prediction's request id (string or integer, <= 256 chars)"
    if "label" not in item:
        return "'label' is required"
    label = item["label"]
    if label is None or isinstance(label, list | dict):
        return "'label' must be a class (string, integer, boolean) or a number"
    if isinstance(label, float) and not math.isfinite(label):
        # NaN/Infinity literals are read (the one JSON dialect), but are no ground truth.
        return f"'label' must be a finite number, got {label!r}"
    if isinstance(label, str) and len(label) > MAX_LABEL_CHARS:
        return (f"'label' is too long: {len(label)} characters, at most {MAX_LABEL_CHARS} "
                "(a class name, or a text the prediction must equal)")
    return None


def parse_batch(body: bytes, ndjson: bool, key: str = "records"
                ) -> tuple[list[Any], str | None, list[dict[str, Any]]]:
    """Split a body into (items, batch-level model, line-level parse errors)."""
    if ndjson:
        records: list[Any] = []
        errors: list[dict[str, Any]] = []
        for index, line in enumerate(ln for ln in body.split(b"\n") if ln.strip()):
            try:
                records.append(loads(line))
            except JSONDecodeError as exc:
                records.append(None)
                errors.append({"index": index, "error": f"invalid JSON: {exc}"})
        return records, None, errors
    try:
        payload = loads(body)
    except JSONDecodeError as exc:
        raise BadRequest(400, "invalid_json", f"body is not JSON ({exc}); "
                         "send NDJSON with Content-Type: application/x-ndjson") from None
    if isinstance(payload, list):
        return payload, None, []
    if isinstance(payload, dict) and isinstance(payload.get(key), list):
        model = payload.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest(400, "invalid_batch", "'model' must be a string")
        extra = payload.keys() - {key, "model"}
        if extra:
            raise BadRequest(400, "invalid_batch", f"unknown batch field(s) {sorted(extra)}")
        return payload[key], model, []
    raise BadRequest(400, "invalid_batch",
                     f'expected {{"{key}": [...]}}, a JSON array of {key}, or NDJSON')


class Labels(Protocol):
    def receive_label(self, key: str, label: Any) -> str: ...

    def count_invalid_labels(self, count: int) -> None: ...


def valid_items(items: list[Any], errors: list[dict[str, Any]],
                validate: Callable[[Any], str | None]) -> Iterator[Any]:
    """The items that parsed and validate; the others are added to ``errors`` with their index."""
    failed = {e["index"] for e in errors}
    for index, item in enumerate(items):
        if index in failed:
            continue
        reason = validate(item)
        if reason is not None:
            errors.append({"index": index, "error": reason})
            continue
        yield item


class IngestEndpoints:
    """``POST /v1/records`` and ``POST /v1/labels`` on the admin port."""

    def __init__(self, config: IngestConfig, models: ModelRegistry, queue: AnalysisQueue,
                 labels: Labels, auth: BearerAuth | None = None) -> None:
        self._config = config
        self._models = models
        self._queue = queue
        self._labels = labels
        self._auth = auth  # when set, both endpoints need its bearer token
        self.requests = counter_vec()  # (handler: the path, code)

    async def records(self, request: web.Request) -> web.Response:
        return await self._guarded(request, "/v1/records", self._records)

    async def labels(self, request: web.Request) -> web.Response:
        return await self._guarded(request, "/v1/labels", self._labels_batch)

    async def _guarded(self, request: web.Request, endpoint: str,
                       handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.Response:
        # Checked before the body is read: an unauthenticated caller's body is never buffered.
        refusal = self._auth.refusal(request, endpoint) if self._auth is not None else None
        try:
            response = refusal if refusal is not None else await handler(request)
        except BadRequest as exc:
            if exc.error == "invalid_json" and endpoint == "/v1/records":
                self._queue.drop("invalid_json", 1, str(exc))
            else:
                log.warning(exc.error, "POST %s -> %d: %s", endpoint, exc.status, exc)
            response = web.json_response({"error": exc.error, "detail": str(exc)}, status=exc.status)
        self.requests[(endpoint, str(response.status))] += 1
        return response

    async def _read_batch(self, request: web.Request, key: str
                          ) -> tuple[list[Any], str | None, list[dict[str, Any]]]:
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, "body_too_large", f"body exceeds ingest.max_body_bytes={limit}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(413, "body_too_large", f"body exceeds ingest.max_body_bytes={limit}") from None
        items, batch_model, errors = parse_batch(body, request.content_type in NDJSON_TYPES, key)
        if len(items) > self._config.max_records:
            raise BadRequest(413, f"too_many_{key}",
                             f"{len(items)} {key} exceed ingest.max_records={self._config.max_records}")
        return items, batch_model, errors

    async def _labels_batch(self, request: web.Request) -> web.Response:
        items, _, errors = await self._read_batch(request, "labels")
        outcomes: dict[str, int] = {"joined": 0, "unmatched": 0, "duplicate": 0}
        for item in valid_items(items, errors, validate_label):
            outcome = self._labels.receive_label(str(item["id"]), item["label"])
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if errors:
            self._labels.count_invalid_labels(len(errors))
        errors.sort(key=lambda e: e["index"])
        accepted = sum(outcomes.values())
        result: dict[str, Any] = {**outcomes, "rejected": len(errors), "errors": errors[:MAX_ERRORS_REPORTED]}
        if accepted == 0 and errors:
            result["error"] = "invalid_labels"
            return web.json_response(result, status=400)
        return web.json_response(result, status=202)

    async def _records(self, request: web.Request) -> web.Response:
        records, batch_model, errors = await self._read_batch(request, "records")
        default = batch_model or request.query.get("model")
        by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in valid_items(records, errors, validate_record):
            by_model[self._models.label(record.get("model") or default)].append(record)
        accepted = sum(len(v) for v in by_model.values())
        if errors:
            self._queue.drop("invalid_record", len(errors), f"{len(errors)} invalid record(s) pushed, "
                             f"first: #{errors[0]['index']}: {errors[0]['error']}")
        queued = 0
        for model, batch in by_model.items():
            if self._queue.offer(PushedRecords(model, batch), len(batch)):
                queued += len(batch)
                self._models.saw_prediction(model)
        errors.sort(key=lambda e: e["index"])
        result: dict[str, Any] = {
            "accepted": queued,
            "rejected": len(errors),
            "errors": errors[:MAX_ERRORS_REPORTED],
        }
        if queued < accepted:
            result["error"] = "queue_full"
            result["dropped"] = accepted - queued
            return web.json_response(result, status=503, headers={"Retry-After": "1"})
        if accepted == 0 and errors:
            result["error"] = "invalid_records"
            return web.json_response(result, status=400)
        return web.json_response(result, status=202)


class IngestCollector(cat.CatalogueCollector):
    owns = (cat.INGEST_REQUESTS,)

    def __init__(self, endpoint: IngestEndpoints) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        yield cat.INGEST_REQUESTS.of(self._endpoint.requests)
