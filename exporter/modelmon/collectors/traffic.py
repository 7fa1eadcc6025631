"""Request, latency, overhead and upstream-error accounting for proxied traffic."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from ..metrics import catalogue as cat
from ..metrics.instruments import HistogramVec, counter_vec


class TrafficStats:
    """Updated by the proxy on every request; read by TrafficCollector at scrape time."""

    def __init__(self) -> None:
        self.requests = counter_vec()  # (model, route, code)
        self.duration = HistogramVec(cat.REQUEST_DURATION.buckets)  # (model, route)
        self.overhead = HistogramVec(cat.OVERHEAD.buckets)  # (model, route)
        self.in_flight = counter_vec()  # (model,)
        self.upstream_errors = counter_vec()  # (model, reason)
        # Client connections of the fast engine (its own accounting; None: not that engine).
        self.client_connections = 0
        self.client_connection_limit: int | None = None
        self.connections_closed = counter_vec()  # (reason,)

    def finished(self, model: str, route: str, code: int, duration: float, overhead: float) -> None:
        self.requests[(model, route, str(code))] += 1
        self.duration.labels(model, route).observe(duration)
        self.overhead.labels(model, route).observe(max(overhead, 0.0))


class TrafficCollector(cat.CatalogueCollector):
    owns = (
        cat.REQUESTS,
        cat.REQUEST_DURATION,
        cat.OVERHEAD,
        cat.IN_FLIGHT,
        cat.UPSTREAM_ERRORS,
        cat.CLIENT_CONNECTIONS,
        cat.CLIENT_CONNECTIONS_LIMIT,
        cat.CLIENT_CONNECTIONS_CLOSED,
    )

    def __init__(self, stats: TrafficStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield cat.REQUESTS.of(s.requests)
        for spec, vec in ((cat.REQUEST_DURATION, s.duration), (cat.OVERHEAD, s.overhead)):
            family = spec.histogram()
            for labels, hist in list(vec.children.items()):
                family.add_metric(labels, hist.cumulative(), hist.sum)
            yield family
        yield cat.IN_FLIGHT.of(s.in_flight)
        yield cat.UPSTREAM_ERRORS.of(s.upstream_errors)
        if s.client_connection_limit is not None:
            yield cat.CLIENT_CONNECTIONS.of({(): s.client_connections})
            yield cat.CLIENT_CONNECTIONS_LIMIT.of({(): s.client_connection_limit})
            yield cat.CLIENT_CONNECTIONS_CLOSED.of(s.connections_closed)
