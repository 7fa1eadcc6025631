"""The PagerDuty Events API v2 stand-in (tests/pagerduty_receiver.py) rejects what PagerDuty
rejects: the end-to-end alerting test's payload checks are only as good as its validation."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest
from pagerduty_receiver import PagerDutyReceiver, validate_event

KEY = "0123456789abcdef0123456789abcdef"


def trigger() -> dict[str, Any]:
    """A trigger as Alertmanager 0.25 sends it."""
    return {
        "routing_key": KEY, "dedup_key": "a" * 64, "event_action": "trigger",
        "payload": {"summary": "ModelmonUpstreamDown (demo): A model server fails its health probe.",
                    "source": "modelmon Alertmanager", "severity": "critical", "class": "ModelmonUpstreamDown",
                    "component": "demo", "custom_details": {"model": "demo", "num_firing": "1"}},
        "client": "modelmon Alertmanager", "client_url": "http://127.0.0.1:9093",
        "links": [{"href": "https://runbooks.example/runbook.md#modelmonupstreamdown", "text": "Runbook"}],
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    """The trigger with ``path`` (dotted; ``links.0.href``) set to ``value`` (``...``: removed)."""
    event = copy.deepcopy(trigger())
    *parents, last = path.split(".")
    node: Any = event
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return event


def test_a_trigger_as_alertmanager_sends_it_is_valid() -> None:
    assert validate_event(trigger()) == []
    assert validate_event({"routing_key": KEY, "dedup_key": "k", "event_action": "resolve"}) == []
    event = changed("payload.timestamp", "2015-07-17T08:42:58.315+00:00")
    event["images"] = [{"src": "https://example.com/graph.png", "alt": "graph"}]
    assert validate_event(event) == []


@pytest.mark.parametrize(("path", "value", "error"), [
    ("routing_key", ..., "'routing_key' is missing"),
    ("routing_key", KEY + "\n", "'routing_key' must be 32 characters"),
    ("event_action", "fire", "'event_action' must be one of"),
    ("dedup_key", "k" * 256, "'dedup_key' is longer than 255"),
    ("dedup_key", "", "'dedup_key' must be a non-empty string"),
    ("payload", ..., "'payload' is required"),
    ("payload.summary", ..., "'payload.summary' is missing"),
    ("payload.summary", "s" * 1025, "'payload.summary' is longer than 1024"),
    ("payload.source", "", "'payload.source' is missing"),
    ("payload.severity", "page", "'payload.severity' must be one of critical, error, warning, info"),
    ("payload.severity", ..., "'payload.severity' must be one of"),
    ("payload.timestamp", "yesterday", "'payload.timestamp' is not ISO 8601"),
    ("payload.custom_details", "model=demo", "'payload.custom_details' must be an object"),
    ("payload.class", 3, "'payload.class' must be a string"),
    ("links", {"href": "x"}, "'links' must be an array"),
    ("links.0.href", ..., "'links[0].href' is required"),
    ("links.0.text", None, "'links[0].text' must be a string"),
    ("client_url", 1, "'client_url' must be a string"),
])
def test_invalid_events_are_rejected(path: str, value: Any, error: str) -> None:
    errors = validate_event(changed(path, value))
    assert any(e.startswith(error) for e in errors), errors


def test_resolve_needs_a_dedup_key_and_images_https() -> None:
    assert validate_event({"routing_key": KEY, "event_action": "resolve"}) == ["'dedup_key' is required to resolve"]
    event = trigger()
    event["images"] = [{"src": "http://example.com/graph.png"}]
    assert validate_event(event) == ["'images[0].src' must be served over HTTPS"]
    assert validate_event(changed("routing_key", "short"), key_length=None) == []


async def test_the_receiver_answers_as_pagerduty_does() -> None:
    receiver = PagerDutyReceiver()
    url = await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v2/enqueue", json=trigger()) as resp:
                assert resp.status == 202
                assert await resp.json() == {"status": "success", "message": "Event processed",
                                             "dedup_key": "a" * 64}
            async with session.post(f"{url}/v2/enqueue", json=changed("dedup_key", ...)) as resp:
                assert resp.status == 202  # a trigger without dedup_key gets one made up
                assert len((await resp.json())["dedup_key"]) == 32
            async with session.post(f"{url}/v2/enqueue", json=changed("payload.severity", "page")) as resp:
                assert resp.status == 400
                body = await resp.json()
                assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
                assert body["errors"][0].startswith("'payload.severity' must be one of")
            async with session.post(f"{url}/v2/enqueue", data=b"{", headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400
            resolve = {"routing_key": KEY, "dedup_key": "a" * 64, "event_action": "resolve"}
            for _ in range(2):  # the second resolves nothing open: PagerDuty drops it
                async with session.post(f"{url}/v2/enqueue", json=resolve) as resp:
                    assert resp.status == 202
            async with session.post(f"{url}/webhook/warning", json={"status": "firing"}) as resp:
                assert resp.status == 200
    finally:
        await receiver.close()
    assert [e.action for e in receiver.events] == ["trigger", "trigger", "resolve", "resolve"]
    assert len(receiver.rejected) == 2 and len(receiver.dropped) == 1
    assert list(receiver.open_alerts) == [(KEY, receiver.events[1].dedup_key)]
    assert receiver.find("trigger", "ModelmonUpstreamDown") == receiver.events[:2]
    assert [body for _, body in receiver.webhooks["warning"]] == [{"status": "firing"}]
