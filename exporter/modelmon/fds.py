"""File descriptors: the process limit, and how many client connections fit under it.

Every client connection, upstream connection, admin-port connection, probe and open file costs
one descriptor. At the limit ``accept()`` and ``connect()`` fail (``EMFILE``), so a flood of
client connections would leave no room for the upstream pool: every call would fail with
``502 connect``. The proxy therefore holds at most as many client connections as fit beside
the upstream pool and a reserve for everything else.
"""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

log = logging.getLogger("modelmon")

# Descriptors kept for the admin port's connections, listening sockets, probes, logs and files.
RESERVE = 128


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as nginx, Envoy and Go programs do;
    returns the soft limit now in force (-1: unlimited or not POSIX)."""
    if resource is None:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, exc)
    return -1 if soft == resource.RLIM_INFINITY else soft


def client_connection_limit(configured: int, upstream_connections: int) -> int:
    """``configured``, lowered so that that many client connections, the upstream pool and
    :data:`RESERVE` fit under the soft RLIMIT_NOFILE (at least 1)."""
    if resource is None:
        return configured
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(1, soft - upstream_connections - RESERVE)
    if room < configured:
        log.warning("proxy.max_connections lowered from %d to %d: the file descriptor limit is %d "
                    "(%d kept for upstream.max_connections, %d for the admin port and files)",
                    configured, room, soft, upstream_connections, RESERVE)
        return room
    return configured
