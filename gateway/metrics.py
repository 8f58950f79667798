"""The gateway's Prometheus metrics, in a registry of its own (one per app, so tests do not share).

Its `/metrics` also serves the bus's process-wide registry (NATS connection, publishing) and the
staleness of each market's feed as the gateway sees it, both read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus import metrics as bus_metrics
from gateway.frames import Market


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.clients = Gauge("sqt_gateway_clients", "connected WebSocket clients", registry=r)
        self.sent = Counter("sqt_gateway_frames_sent", "frames written to clients", ["type"], registry=r)
        self.sent_by_type = lru_cache(maxsize=64)(self._sent)  # labels() costs a microsecond a frame per client
        self.conflated = Counter("sqt_gateway_frames_conflated", "klines replaced by a newer one while a client was behind", registry=r)
        self.dropped = Counter("sqt_gateway_clients_too_slow", "clients closed because their queue was full", registry=r)
        self.refused = Counter("sqt_gateway_client_frames_refused", "client frames answered with an error", ["code"], registry=r)
        self.resumes = Counter(
            "sqt_gateway_resumes", "resume requests: exact (the missed frames) or restarted (a fresh first screen)", ["outcome"], registry=r
        )
        self.events = Counter("sqt_gateway_events", "stored events read from the streams", ["stream"], registry=r)
        self.latency = Histogram(
            "sqt_gateway_fanout_seconds",
            "from an event's JetStream store time to its frame's write to a client",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.market_seen: dict[Market, int] = {}  # JetStream store time (ns) of each market's last event
        r.register(_Staleness(self.market_seen))
        r.register(_Bus())

    def _sent(self, kind: str) -> Any:
        return self.sent.labels(kind)


class _Staleness(Collector):
    def __init__(self, seen: dict[Market, int]) -> None:
        self.seen = seen

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stale = GaugeMetricFamily(
            "sqt_feed_staleness_seconds",
            "Seconds since the last market event for a market (here: the store time of the last one the gateway read)",
            labels=["component", "venue", "symbol"],
        )
        now = time.time_ns()
        for m, ns in sorted(self.seen.items()):
            stale.add_metric(["gateway", m.venue, m.symbol], max(0.0, (now - ns) / 1e9))
        yield stale


class _Bus(Collector):
    """The bus's process-wide metrics, served beside the gateway's own."""

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from bus_metrics.REGISTRY.collect()
