"""Logging: one line per event, and no floods when the same problem repeats."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class WithheldRequestDetails(logging.Filter):
    """aiohttp's server logs a malformed request with the offending header line quoted, which
    may be an ``Authorization`` header: keep the exception's type, drop what it quotes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = "invalid HTTP request (%s); its content is not logged"
            record.args = (type(record.exc_info[1]).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


def withhold_request_details() -> None:
    """Install :class:`WithheldRequestDetails` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, WithheldRequestDetails) for f in server.filters):
        server.addFilter(WithheldRequestDetails())


class RateLimitedLog:
    """Logs a given key at most once per ``interval`` seconds, reporting how many were
    suppressed, so a flood of bad payloads costs one line per reason per interval."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 256) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) >= self._max_keys and key not in self._last:
            self._last.clear()  # bounded: forget old keys rather than grow
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg += " (%d similar suppressed)"
            args = (*args, skipped)
        self._logger.warning(msg, *args)
