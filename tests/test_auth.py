"""Bearer-token authentication on the admin port: the push API needs the token from
auth.token_file (RFC 6750), reads stay open unless configured, the token rotates with its file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import Running, StartSidecar, sidecar_config
from modelmon.config import ConfigError
from modelmon.sidecar import auth
from modelmon.sidecar.state import Sidecar
from prometheus_client import CollectorRegistry

TOKEN = "s3cr3t-Token_0123456789abcdef"
OTHER = "n0t-the-Token_0123456789abcdef"
WRITES = {
    "/v1/records": {"model": "churn", "records": [{"id": "r1", "features": {"x": 1}, "prediction": 1}]},
    "/v1/labels": {"labels": [{"id": "r1", "label": 1}]},
}
READS = ("/", "/metrics", "/healthz", "/readyz")


def token_file(tmp_path: Path, token: str = TOKEN, name: str = "token") -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")  # as `kubectl create secret --from-file` of an echo-ed file
    return path


async def start(start_sidecar: StartSidecar, path: Path, protect: tuple[str, ...] = ("writes",)) -> Running:
    return await start_sidecar(None, models=[{"name": "churn"}],
                               auth={"token_file": str(path), "protect": list(protect)})


async def call(running: Running, path: str, authorization: str | None = None,
               *more: str) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    headers = [("Authorization", authorization)] if authorization is not None else []
    headers += [("Authorization", value) for value in more]
    method, body = ("POST", orjson.dumps(WRITES[path])) if path in WRITES else ("GET", None)
    async with aiohttp.ClientSession() as s, s.request(
        method, running.admin_url + path, data=body, headers=headers
    ) as resp:
        payload = await resp.read()
        parsed = orjson.loads(payload) if resp.content_type == "application/json" else {}
        return resp.status, dict(resp.headers), parsed


def refused(running: Running, endpoint: str, reason: str) -> float:
    value = running.sample("modelmon_auth_refused_requests_total", {"handler": endpoint, "reason": reason})
    return value or 0.0


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_writes_without_a_token_are_401_with_a_challenge(
        tmp_path: Path, start_sidecar: StartSidecar, endpoint: str) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    for authorization in (None, f"Basic {TOKEN}"):  # another scheme is no authentication
        status, headers, body = await call(running, endpoint, authorization)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="modelmon"'  # no error code (RFC 6750 §3.1)
        assert body["error"] == "missing_token"
    assert refused(running, endpoint, "missing_token") == 2
    assert running.sample("modelmon_ingest_requests_total", {"handler": endpoint, "code": "401"}) == 2
    await running.drain()
    assert running.sample("modelmon_analysis_records_total", {"model": "churn", "source": "push"}) is None


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_a_wrong_token_is_401_invalid_token(
        tmp_path: Path, start_sidecar: StartSidecar, endpoint: str) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    for presented in (OTHER, TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        status, headers, body = await call(running, endpoint, f"Bearer {presented}")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="modelmon", error="invalid_token"'
        assert body["error"] == "invalid_token"
    assert refused(running, endpoint, "invalid_token") == 4


@pytest.mark.parametrize("endpoint", list(WRITES))
async def test_the_right_token_is_accepted(tmp_path: Path, start_sidecar: StartSidecar, endpoint: str) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}"):  # RFC 9110 §11.1
        status, _, _ = await call(running, endpoint, authorization)
        assert status == 202
    assert running.sample("modelmon_ingest_requests_total", {"handler": endpoint, "code": "202"}) == 3
    assert sum(refused(running, endpoint, r) for r in ("missing_token", "invalid_request",
                                                       "invalid_token", "token_unavailable")) == 0


@pytest.mark.parametrize("headers", [("Bearer",), ("Bearer ",), ("Bearer a b",), ("Bearer tök",),
                                     (f"Bearer {TOKEN}", f"Bearer {TOKEN}")])
async def test_a_malformed_authorization_header_is_400_invalid_request(
        tmp_path: Path, start_sidecar: StartSidecar, headers: tuple[str, ...]) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    status, response_headers, body = await call(running, "/v1/records", *headers)
    assert status == 400
    assert response_headers["WWW-Authenticate"] == 'Bearer realm="modelmon", error="invalid_request"'
    assert body["error"] == "invalid_request"
    assert refused(running, "/v1/records", "invalid_request") == 1


async def test_pushed_records_are_analysed_only_with_the_token(tmp_path: Path, start_sidecar: StartSidecar) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    await call(running, "/v1/records", f"Bearer {OTHER}")
    await call(running, "/v1/records", f"Bearer {TOKEN}")
    await running.drain()
    assert running.sample("modelmon_analysis_records_total", {"model": "churn", "source": "push"}) == 1


async def test_reads_stay_open_by_default(tmp_path: Path, start_sidecar: StartSidecar) -> None:
    running = await start(start_sidecar, token_file(tmp_path))
    for path in READS:
        status, _, _ = await call(running, path)
        assert status == 200, path


async def test_without_a_token_file_writes_are_open(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None, models=[{"name": "churn"}])
    assert running.sidecar.auth is None
    status, _, _ = await call(running, "/v1/records")
    assert status == 202


@pytest.mark.parametrize(("protect", "closed"), [
    (("writes", "metrics"), ("/", "/metrics")),
    (("writes", "metrics", "health"), READS),
])
async def test_reads_can_require_the_token(tmp_path: Path, start_sidecar: StartSidecar,
                                           protect: tuple[str, ...], closed: tuple[str, ...]) -> None:
    running = await start(start_sidecar, token_file(tmp_path), protect)
    for path in READS:
        status, headers, _ = await call(running, path)
        if path in closed:
            assert status == 401, path
            assert headers["WWW-Authenticate"] == 'Bearer realm="modelmon"'
            assert refused(running, path, "missing_token") == 1
            status, _, _ = await call(running, path, f"Bearer {OTHER}")
            assert status == 401, path
        else:
            assert status == 200, path
        status, _, _ = await call(running, path, f"Bearer {TOKEN}")
        assert status == 200, path


async def test_rewriting_the_file_rotates_the_token(tmp_path: Path, start_sidecar: StartSidecar) -> None:
    path = token_file(tmp_path)
    running = await start(start_sidecar, path)
    assert (await call(running, "/v1/records", f"Bearer {TOKEN}"))[0] == 202
    path.write_text(OTHER + "\n")  # same length, in place, within one tick of the file clock
    assert (await call(running, "/v1/records", f"Bearer {TOKEN}"))[0] == 401
    assert (await call(running, "/v1/records", f"Bearer {OTHER}"))[0] == 202


async def test_a_kubernetes_secret_update_rotates_the_token(tmp_path: Path, start_sidecar: StartSidecar) -> None:
    # The kubelet's AtomicWriter: <dir>/token -> ..data/token, ..data -> ..<timestamp>/; an update
    # writes a new timestamped directory and renames a new ..data symlink over the old one.
    mount = tmp_path / "secret"
    (mount / "..2026_01_01_00_00_00.1").mkdir(parents=True)
    token_file(mount / "..2026_01_01_00_00_00.1")
    (mount / "..data").symlink_to("..2026_01_01_00_00_00.1")
    (mount / "token").symlink_to("..data/token")
    running = await start(start_sidecar, mount / "token")
    assert (await call(running, "/v1/labels", f"Bearer {TOKEN}"))[0] == 202

    (mount / "..2026_01_02_00_00_00.2").mkdir()
    token_file(mount / "..2026_01_02_00_00_00.2", OTHER)
    (mount / "..data_tmp").symlink_to("..2026_01_02_00_00_00.2")
    os.replace(mount / "..data_tmp", mount / "..data")
    for old in (mount / "..2026_01_01_00_00_00.1").iterdir():
        old.unlink()
    (mount / "..2026_01_01_00_00_00.1").rmdir()

    assert (await call(running, "/v1/labels", f"Bearer {TOKEN}"))[0] == 401
    assert (await call(running, "/v1/labels", f"Bearer {OTHER}"))[0] == 202


async def test_a_token_file_that_goes_away_fails_closed(
        tmp_path: Path, start_sidecar: StartSidecar, caplog: pytest.LogCaptureFixture) -> None:
    path = token_file(tmp_path)
    running = await start(start_sidecar, path)
    path.unlink()
    for _ in range(3):
        status, headers, body = await call(running, "/v1/records", f"Bearer {TOKEN}")
        assert (status, body["error"], headers["Retry-After"]) == (503, "token_unavailable", "10")
    assert refused(running, "/v1/records", "token_unavailable") == 3
    # no token presented: still plain 401, the file is not consulted
    assert (await call(running, "/v1/records"))[0] == 401
    lines = [r.getMessage() for r in caplog.records if "token_unavailable" in r.getMessage()
             or "no token to check against" in r.getMessage()]
    assert len(lines) == 1, lines  # rate-limited: one line per reason per interval
    assert "cannot read" in lines[0] and str(path) in lines[0]

    path.write_text("\n")  # an empty file is no token either
    assert (await call(running, "/v1/records", f"Bearer {TOKEN}"))[0] == 503

    token_file(tmp_path, OTHER)
    assert (await call(running, "/v1/records", f"Bearer {TOKEN}"))[0] == 401
    assert (await call(running, "/v1/records", f"Bearer {OTHER}"))[0] == 202


async def test_the_token_is_never_logged(tmp_path: Path, start_sidecar: StartSidecar,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = token_file(tmp_path)
    running = await start(start_sidecar, path, ("writes", "metrics", "health"))
    for authorization in (None, f"Bearer {OTHER}", f"Basic {OTHER}", f"Bearer {OTHER} {OTHER}",
                          f"Bearer {TOKEN}"):
        for endpoint in (*WRITES, *READS):
            await call(running, endpoint, authorization)
    token_file(tmp_path, OTHER)  # rotation
    await call(running, "/v1/records", f"Bearer {TOKEN}")
    path.write_text(f"{TOKEN} not a token\n")  # bad content
    await call(running, "/v1/records", f"Bearer {TOKEN}")
    path.unlink()  # gone
    await call(running, "/v1/records", f"Bearer {TOKEN}")
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert any("token reloaded" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + str(record.args)
        assert TOKEN not in text and OTHER not in text, text


async def test_the_comparison_is_constant_time(tmp_path: Path, start_sidecar: StartSidecar,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    running = await start(start_sidecar, token_file(tmp_path))
    assert (await call(running, "/v1/records", f"Bearer {OTHER}"))[0] == 401
    assert (await call(running, "/v1/records", f"Bearer {TOKEN}"))[0] == 202
    assert compared == [(OTHER.encode(), TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read"),
    ("", "is empty"),
    ("\n", "is empty"),
    ("two words\n", "does not hold a bearer token"),
])
def test_an_unusable_token_file_stops_start_up(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    config = sidecar_config(None, auth={"token_file": str(path)})
    with pytest.raises(ConfigError, match=rf"^auth\.token_file: .*{problem}") as info:
        Sidecar(config, CollectorRegistry())
    assert "two" not in str(info.value)


def test_serve_exits_with_a_clear_error_on_a_missing_token_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "modelmon", "serve", "--no-upstream", "--admin-port", "0",
         "--auth-token-file", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid config: auth.token_file: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_file_is_read_only_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = token_file(tmp_path)
    os.utime(path, (1e9, 1e9))  # settled long ago
    opened: list[str] = []

    def counting_open(file: str, mode: str) -> object:
        opened.append(file)
        return open(file, mode)

    monkeypatch.setattr(auth, "open", counting_open, raising=False)
    tokens = auth.TokenFile(str(path))
    assert [tokens.token() for _ in range(100)] == [TOKEN.encode()] * 100
    assert len(opened) == 1  # one stat per check, one read per change
    token_file(tmp_path, OTHER)
    os.utime(path, (1e9 + 1, 1e9 + 1))
    assert [tokens.token() for _ in range(100)] == [OTHER.encode()] * 100
    assert len(opened) == 2


async def test_a_malformed_authorization_header_is_not_logged(tmp_path, start_sidecar, caplog) -> None:  # type: ignore[no-untyped-def]
    """aiohttp's server quotes a header it cannot parse; the token must not reach the log."""
    import asyncio
    import logging

    running = await start_sidecar(None)
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"
    for bad in (f"Bearer {secret}\r", f"Bearer {secret}\x01", "Bearer " + secret * 600):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.listeners.admin_port)
        writer.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: " + bad.encode("latin-1")
                     + b"\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert secret not in caplog.text
