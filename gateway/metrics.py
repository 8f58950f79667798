"""The gateway's Prometheus metrics, in a registry of its own (one per app, so tests do not share)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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

    def _sent(self, kind: str) -> Any:
        return self.sent.labels(kind)
