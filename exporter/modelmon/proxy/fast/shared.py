"""What every connection and call of one fast-engine listener uses, handed to each when it is
made (instead of a reference back to the listener): the settings read on the hot path, as
plain attributes (one lookup each), the upstream pool, the traffic counters, the analysis queue,
the models, request ids, the route match, and the listener's connection registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...analysis.queue import AnalysisQueue
from ...collectors.models import ModelRegistry
from ...collectors.traffic import TrafficStats
from ..common import RequestIds
from ..routes import RouteMatch

if TYPE_CHECKING:
    from .client import ClientConnection
    from .upstream import UpstreamPool


@dataclass(slots=True)
class Shared:
    preserve_host: bool
    id_header: bytes | None  # the request id header, as sent
    id_lower: bytes | None  # the same, lower-cased, as llhttp reports header names
    base: bytes  # the upstream URL's path prefix
    host_field: bytes  # "Host: <upstream authority>\r\n"
    request_buffering: bool
    cap: int  # bodies beyond this many bytes are not analysed
    ids: RequestIds
    models: ModelRegistry
    stats: TrafficStats
    queue: AnalysisQueue
    pool: UpstreamPool
    clients: set[ClientConnection]  # the listener's open client connections
    match: Callable[[bytes], RouteMatch]  # request target -> route (cached)
    admit: Callable[[ClientConnection], bool]  # room for a new connection (may evict one)
    client_gone: Callable[[ClientConnection], None]
    closing: bool = False  # the listener is shutting down
