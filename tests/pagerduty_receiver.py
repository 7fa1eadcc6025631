"""A local stand-in for PagerDuty's Events API v2 (``POST /v2/enqueue``), and plain webhook
endpoints, for end-to-end tests of the Alertmanager configuration.

It validates every event against the published API (developer.pagerduty.com, "Send an Alert
Event", and the Events API v2 overview):

- ``routing_key``: required string, the 32-character integration key (``key_length=None``
  accepts any non-empty key);
- ``event_action``: ``trigger``, ``acknowledge`` or ``resolve``;
- ``dedup_key``: optional on ``trigger`` (PagerDuty then makes one up and returns it), required
  on ``acknowledge``/``resolve``; at most 255 characters;
- on ``trigger``, ``payload`` with ``summary`` (at most 1024 characters), ``source`` and
  ``severity`` (``critical``, ``error``, ``warning`` or ``info``); optional ``timestamp``
  (ISO 8601), ``component``, ``group``, ``class`` (strings) and ``custom_details`` (an object);
- ``images``: objects with ``src`` (HTTPS) and optional ``href``, ``alt``; ``links``: objects
  with ``href`` and optional ``text``; ``client``, ``client_url``: strings;
- the body is JSON (``Content-Type: application/json``) of at most 512 KB.

A valid event is answered ``202 {"status": "success", "message": "Event processed",
"dedup_key": ...}``; an invalid one ``400 {"status": "invalid event", "message": "Event object
is invalid", "errors": [...]}``, as PagerDuty does. Alerts are tracked per (routing key, dedup
key) as PagerDuty does: a trigger opens one (or adds to the open one), a resolve closes it, and a
resolve or acknowledge for no open alert is dropped (recorded in ``dropped``).

``POST /webhook/{name}`` stores any JSON body (Alertmanager's webhook receiver) under ``name``.

Run standalone to watch what an Alertmanager sends:
``python tests/pagerduty_receiver.py --port 9095``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")
MAX_BODY = 512 * 1000  # "Events API payloads are limited to 512 KB"
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
ROUTING_KEY_LENGTH = 32


def _is_str(value: Any, allow_empty: bool = False) -> bool:
    return isinstance(value, str) and (allow_empty or bool(value))


def validate_event(event: Any, key_length: int | None = ROUTING_KEY_LENGTH) -> list[str]:
    """The reasons ``event`` is not a valid Events API v2 alert event (empty: valid)."""
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not _is_str(key):
        errors.append("'routing_key' is missing or not a non-empty string")
    elif key_length is not None and len(key) != key_length:
        errors.append(f"'routing_key' must be {key_length} characters, got {len(key)}")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(ACTIONS)}, got {action!r}")
    dedup = event.get("dedup_key")
    if dedup is not None and not _is_str(dedup):
        errors.append("'dedup_key' must be a non-empty string")
    elif isinstance(dedup, str) and len(dedup) > MAX_DEDUP_KEY:
        errors.append(f"'dedup_key' is longer than {MAX_DEDUP_KEY} characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append(f"'dedup_key' is required to {action}")
    for name in ("client", "client_url"):
        if name in event and not _is_str(event[name], allow_empty=True):
            errors.append(f"'{name}' must be a string")
    payload = event.get("payload")
    if action == "trigger" or payload is not None:
        errors.extend(_validate_payload(payload, required=action == "trigger"))
    for i, link in enumerate(_list(event, "links", errors)):
        if not isinstance(link, dict) or not _is_str(link.get("href")):
            errors.append(f"'links[{i}].href' is required")
        elif "text" in link and not _is_str(link["text"], allow_empty=True):
            errors.append(f"'links[{i}].text' must be a string")
    for i, image in enumerate(_list(event, "images", errors)):
        if not isinstance(image, dict) or not _is_str(image.get("src")):
            errors.append(f"'images[{i}].src' is required")
        elif not image["src"].startswith("https://"):
            errors.append(f"'images[{i}].src' must be served over HTTPS")
    return errors


def _list(event: dict[str, Any], name: str, errors: list[str]) -> list[Any]:
    value = event.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"'{name}' must be an array")
        return []
    return value


def _validate_payload(payload: Any, required: bool) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required (an object) to trigger"] if required else [
            "'payload' must be an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not _is_str(summary):
        errors.append("'payload.summary' is missing or empty")
    elif len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is longer than {MAX_SUMMARY} characters")
    if not _is_str(payload.get("source")):
        errors.append("'payload.source' is missing or empty")
    if payload.get("severity") not in SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}, "
                      f"got {payload.get('severity')!r}")
    timestamp = payload.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"'payload.timestamp' is not ISO 8601: {timestamp!r}")
    for name in ("component", "group", "class"):
        if name in payload and not _is_str(payload[name], allow_empty=True):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


@dataclass
class Event:
    """An accepted event, with when it arrived (``time.monotonic()``)."""

    body: dict[str, Any]
    at: float

    @property
    def action(self) -> str:
        return str(self.body["event_action"])

    @property
    def dedup_key(self) -> str:
        return str(self.body["dedup_key"])

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = self.body.get("payload") or {}
        return payload

    @property
    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = self.payload.get("custom_details") or {}
        return details


@dataclass
class Rejected:
    body: Any
    errors: list[str]


@dataclass
class PagerDutyReceiver:
    key_length: int | None = ROUTING_KEY_LENGTH
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dropped: list[Event] = field(default_factory=list)  # resolve/acknowledge with no open alert
    open_alerts: dict[tuple[str, str], list[Event]] = field(default_factory=dict)
    webhooks: dict[str, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * MAX_BODY)
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_post("/webhook/{name}", self._webhook)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        errors: list[str] = []
        body: Any = raw
        if request.content_type != "application/json":
            errors.append(f"Content-Type must be application/json, got {request.content_type!r}")
        if len(raw) > MAX_BODY:
            errors.append(f"the event is larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            errors.append(f"not JSON: {exc}")
        else:
            errors.extend(validate_event(body, self.key_length))
        if errors:
            self.rejected.append(Rejected(body, errors))
            return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                      "errors": errors}, status=400)
        if body.get("dedup_key") is None:
            body["dedup_key"] = uuid.uuid4().hex
        event = Event(body, time.monotonic())
        self.events.append(event)
        incident = (body["routing_key"], body["dedup_key"])
        if event.action == "trigger":
            self.open_alerts.setdefault(incident, []).append(event)
        elif incident not in self.open_alerts:
            self.dropped.append(event)
        elif event.action == "resolve":
            del self.open_alerts[incident]
        return web.json_response({"status": "success", "message": "Event processed",
                                  "dedup_key": body["dedup_key"]}, status=202)

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.webhooks.setdefault(request.match_info["name"], []).append((time.monotonic(), body))
        return web.json_response({"status": "ok"})

    def find(self, action: str, alertname: str) -> list[Event]:
        """Accepted events of one action for one alert (its name is the payload's ``class``,
        as modelmon's alertmanager.yml sets it)."""
        return [e for e in self.events if e.action == action and e.payload.get("class") == alertname]

    async def wait_for(self, action: str, alertname: str, timeout: float) -> Event:
        return await wait_until(lambda: next(iter(self.find(action, alertname)), None), timeout,
                                f"a PagerDuty {action} event for {alertname}", self.describe)

    def describe(self) -> str:
        lines = [f"{e.action} {e.payload.get('class')} {e.payload.get('summary')!r}" for e in self.events]
        lines += [f"REJECTED {r.errors}" for r in self.rejected]
        return "PagerDuty events so far:\n  " + "\n  ".join(lines or ["(none)"])


async def wait_until(probe: Callable[[], Any], timeout: float, what: str,
                     context: Callable[[], str] | None = None, interval: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g}s" + (f"\n{context()}" if context else ""))
        await asyncio.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--any-key-length", action="store_true", help="accept routing keys of any length")
    args = parser.parse_args()
    receiver = PagerDutyReceiver(key_length=None if args.any_key_length else ROUTING_KEY_LENGTH)

    @web.middleware
    async def log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        print(request.method, request.path, response.status, (await request.read()).decode(), flush=True)
        return response

    app = receiver.app()
    app.middlewares.append(log_requests)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
