"""Bearer-token authentication on the admin port (RFC 6750 §2.1, RFC 9110 §11).

The token is read from a file, normally a mounted Kubernetes Secret. Kubernetes updates such a
file by swapping a symlink, so the path is ``stat``-ed on every check (cheap: no read) and
the file re-read when its inode, size or times change: a rotated token is in force on the next
request, without a restart. A missing, unreadable or empty file at start-up is an error; later
it fails closed — every protected request is refused (``503``) until a token can be read again.

The token and the ``Authorization`` header are never logged, and never appear in a response.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client.core import Metric

from ..config import AuthConfig, ConfigError
from ..logs import RateLimitedLog
from ..metrics import catalogue as cat
from ..metrics.instruments import counter_vec

logger = logging.getLogger("modelmon.auth")

REALM = "modelmon"
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# File times come from a coarse clock: a file rewritten in place within one tick, at the same
# size, keeps its stat. A file changed this recently is re-read on every check.
SETTLE_SECONDS = 1.0
MAX_TOKEN_FILE_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenFile:
    """The token in a file, re-read when the file changes. ``token()`` is None (and
    ``problem`` says why, without the file's content) while no valid token can be read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem: str | None = None
        self._token: bytes | None = None
        self._stamp: tuple[int, ...] | None = None

    def token(self) -> bytes | None:
        try:
            st = os.stat(self.path)  # the path, not a held descriptor: follows a symlink swap
            if _stamp(st) == self._stamp and time.time() - st.st_mtime > SETTLE_SECONDS:
                return self._token
            with open(self.path, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            self._token, self._stamp = None, None
            self.problem = f"cannot read {self.path}: {exc.strerror}"
            return None
        self._stamp = stamp  # a bad file is not re-read until it changes
        token = raw.rstrip(b"\r\n")
        if not token:
            self._token, self.problem = None, f"{self.path} is empty"
        elif len(raw) > MAX_TOKEN_FILE_BYTES or not B64TOKEN_RE.fullmatch(token.decode("latin-1")):
            self._token, self.problem = None, (
                f"{self.path} does not hold a bearer token (one line of letters, digits and "
                "-._~+/, optionally ending in =)")
        else:
            if self.problem is not None:
                logger.info("auth.token_file %s: token readable again", self.path)
            elif self._token is not None and token != self._token:
                logger.info("auth.token_file %s changed: token reloaded", self.path)
            self._token, self.problem = token, None
        return self._token


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against the token file and counts refusals
    by endpoint and reason (``missing_token``, ``invalid_request``, ``invalid_token``,
    ``token_unavailable``)."""

    def __init__(self, config: AuthConfig) -> None:
        assert config.token_file is not None
        self.protect = frozenset(config.protect)
        self.file = TokenFile(config.token_file)
        if self.file.token() is None:
            raise ConfigError(f"auth.token_file: {self.file.problem}")
        self.refused = counter_vec()  # (handler: the path, reason)
        self._log = RateLimitedLog(logger)  # one line per reason per 10 s

    def protects(self, group: str) -> bool:
        """Whether the endpoints of ``group`` (writes, metrics, health) need the token."""
        return group in self.protect

    def wrap(self, group: str, endpoint: str, handler: Handler) -> Handler:
        """``handler``, behind the token if ``group`` is protected."""
        if not self.protects(group):
            return handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = self.refusal(request, endpoint)
            return refusal if refusal is not None else await handler(request)

        return guarded

    def refusal(self, request: web.Request, endpoint: str) -> web.Response | None:
        """None if the request carries the token, else the response refusing it."""
        values = request.headers.getall("Authorization", [])
        if not values:
            return self._refuse(request, endpoint, "missing_token")
        if len(values) > 1:
            return self._refuse(request, endpoint, "invalid_request")
        scheme, _, credentials = values[0].partition(" ")
        if scheme.lower() != "bearer":  # RFC 9110 §11.1: the scheme is case-insensitive
            # RFC 6750 §3.1: another scheme counts as no authentication: no error code.
            return self._refuse(request, endpoint, "missing_token")
        presented = credentials.strip(" ")
        if not B64TOKEN_RE.fullmatch(presented):
            return self._refuse(request, endpoint, "invalid_request")
        token = self.file.token()
        if token is None:
            return self._refuse(request, endpoint, "token_unavailable")
        if not hmac.compare_digest(presented.encode("ascii"), token):
            return self._refuse(request, endpoint, "invalid_token")
        return None

    def _refuse(self, request: web.Request, endpoint: str, reason: str) -> web.Response:
        self.refused[(endpoint, reason)] += 1
        if reason == "token_unavailable":
            self._log.warning(reason, "%s %s refused: no token to check against (auth.token_file: %s)",
                              request.method, endpoint, self.file.problem)
            return web.json_response(
                {"error": reason, "detail": "the sidecar cannot read its token file; retry later"},
                status=503, headers={"Retry-After": "10"})
        self._log.warning(reason, "%s %s from %s refused: %s", request.method, endpoint,
                          request.remote, reason)
        if reason == "missing_token":
            status, challenge = 401, f'Bearer realm="{REALM}"'
            detail = "send the token in an Authorization: Bearer header"
        elif reason == "invalid_request":
            status, challenge = 400, f'Bearer realm="{REALM}", error="invalid_request"'
            detail = "malformed Authorization header: send one, as Authorization: Bearer <token>"
        else:
            status, challenge = 401, f'Bearer realm="{REALM}", error="invalid_token"'
            detail = "the token is not valid"
        return web.json_response({"error": reason, "detail": detail}, status=status,
                                 headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"})


class AuthCollector(cat.CatalogueCollector):
    owns = (cat.AUTH_REFUSED,)

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    def collect(self) -> Iterator[Metric]:
        yield cat.AUTH_REFUSED.of(self._auth.refused)
