"""The bus's own metrics, process-wide, in one registry that every component's `/metrics` adds to.

Most figures already exist as plain integers on the objects that count them (a consumer's
`RuntimeStats`, a NATS client's `stats`, a publisher's counts): they are read when Prometheus
scrapes, by `BusCollector`, so the hot path pays nothing for them. What has no such integer is
measured directly, at most once per batch (the batch's processing time) or on rare events
(dead letters, disconnects, publish retries and timeouts), through children bound once.

Labels are bounded: `consumer` (a durable name, one or a few per process), `stream`, `client`
(a NATS connection's name, one per component), `reason` (a small fixed set of categories).
Never an order id, a client id or free error text. See docs/adr/0015.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from nats.aio.client import Client

    from bus.consumer import Consumer
    from bus.publisher import Publisher

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds

BATCH_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BATCH_SECONDS = Histogram(
    "sqt_bus_batch_seconds",
    "Processing of one delivered batch: fold or handle, publish the outputs, wait for their acks, ack",
    ["consumer"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "sqt_bus_dead_letters_total", "Inputs copied to the DLQ and terminated, by reason category", ["consumer", "reason"], registry=REGISTRY
)
SESSION_FAILURES = Counter(
    "sqt_bus_session_failures_total",
    "Consumer sessions that ended in an error and were rebuilt from the log, by error type",
    ["consumer", "reason"],
    registry=REGISTRY,
)
DISCONNECTS = Counter("sqt_bus_disconnects_total", "Connections to NATS lost (not our own close)", ["client"], registry=REGISTRY)
PUBLISH_RETRIES = Counter(
    "sqt_bus_publish_retries_total", "Messages published again (same id) after their ack timed out", registry=REGISTRY
)
PUBLISH_TIMEOUTS = Counter("sqt_bus_publish_timeouts_total", "Publishes whose JetStream ack did not come in time", registry=REGISTRY)
PUBLISH_ERRORS = Counter(
    "sqt_bus_publish_errors_total", "Publishes JetStream refused (no stream, an API error, an unreadable ack)", registry=REGISTRY
)
COMPONENT = Gauge(
    "sqt_component_info", "1 for each component this process runs as (its micro service)", ["component", "id"], registry=REGISTRY
)
STARTED = Gauge(
    "sqt_component_start_time_seconds",
    "When the component registered, in seconds since the epoch",
    ["component", "id"],
    registry=REGISTRY,
)

# Dead-letter reasons are free text (they name the exception); the metric keeps a category.
_REASONS: tuple[tuple[str, str], ...] = (
    ("undecodable", "decode"),
    ("does not name a valid subject", "subject"),
    ("the subject is the authority", "subject"),
    ("after it was stored", "future"),
    ("rejected by the core", "core"),
    ("handler failed", "handler"),
    ("answer was dropped", "output"),
    ("output", "output"),
)
REASON_CATEGORIES = ("decode", "subject", "future", "core", "handler", "output", "other")


def reason_category(reason: str) -> str:
    """One of REASON_CATEGORIES for a dead letter's reason."""
    for needle, category in _REASONS:
        if needle in reason:
            return category
    return "other"


# How long a consumer may go without a live session (starting, replaying, rebuilding) before
# `/health` calls it stalled. A rebuild waits at most 5 s between attempts; a long replay at
# start is the usual reason to come near this.
NOT_LIVE_GRACE_S = 60.0


class BusCollector(Collector):
    """Reads, at scrape time, the counts the consumers, connections and publishers of this process keep."""

    def __init__(self) -> None:
        self.consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        self.clients: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()
        self.publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        yield from self._consumer_metrics(list(self.consumers))
        yield from self._client_metrics(list(self.clients.items()))
        pubs = list(self.publishers)
        published = CounterMetricFamily("sqt_bus_published_total", "Messages JetStream acknowledged (stored or duplicate)")
        published.add_metric([], sum(p.published for p in pubs))
        duplicates = CounterMetricFamily("sqt_bus_publish_duplicates_total", "Publishes JetStream dropped as duplicates of a stored id")
        duplicates.add_metric([], sum(p.duplicates for p in pubs))
        in_flight = GaugeMetricFamily("sqt_bus_publish_in_flight", "Publishes waiting for their JetStream ack")
        in_flight.add_metric([], sum(p.in_flight for p in pubs))
        yield from (published, duplicates, in_flight)

    @staticmethod
    def _consumer_metrics(consumers: Iterable[Consumer]) -> Iterator[Metric]:
        labels = ["consumer", "stream"]
        counters = {
            "processed": CounterMetricFamily("sqt_bus_inputs_total", "Inputs processed live (acked after their outputs)", labels=labels),
            "replayed": CounterMetricFamily("sqt_bus_replayed_inputs_total", "Inputs folded again from the log at recovery", labels=labels),
            "redelivered": CounterMetricFamily(
                "sqt_bus_redeliveries_total",
                "Inputs delivered again: JetStream's delivery count above 1, or already received by an earlier session",
                labels=labels,
            ),
            "outputs": CounterMetricFamily("sqt_bus_outputs_total", "Outputs published and acknowledged by JetStream", labels=labels),
            "duplicates": CounterMetricFamily(
                "sqt_bus_output_duplicates_total", "Outputs JetStream dropped as already stored (a replay's or a retry's)", labels=labels
            ),
            "checkpoints": CounterMetricFamily("sqt_bus_checkpoints_total", "Checkpoints written", labels=labels),
            "sessions": CounterMetricFamily("sqt_bus_sessions_total", "Sessions started (the first and every rebuild)", labels=labels),
        }
        pending = GaugeMetricFamily(
            "sqt_bus_consumer_pending_messages", "Inputs stored but not yet delivered, as the last delivery said", labels=labels
        )
        last_seq = GaugeMetricFamily("sqt_bus_consumer_last_seq", "Stream sequence of the last input settled", labels=labels)
        live = GaugeMetricFamily(
            "sqt_bus_consumer_live", "1 while a live session pulls inputs, 0 while starting or rebuilding", labels=labels
        )
        silence = GaugeMetricFamily(
            "sqt_bus_consumer_silence_seconds", "Seconds since the live pull last heard a message or a heartbeat", labels=labels
        )
        totals: dict[tuple[str, str], dict[str, float]] = {}
        for c in consumers:
            key = (c.spec.name, c.spec.stream)
            t = totals.setdefault(key, dict.fromkeys((*counters, "lag", "last_seq", "live", "silence"), 0.0))
            s = c.stats
            for name in counters:
                t[name] += getattr(s, name)
            t["lag"] += s.lag
            t["last_seq"] = max(t["last_seq"], s.last_seq)
            feed = c.live_feed
            if feed is not None:
                t["live"] = 1.0
                t["silence"] = max(t["silence"], feed.silence())
        for key, t in totals.items():
            for name, family in counters.items():
                family.add_metric(list(key), t[name])
            pending.add_metric(list(key), t["lag"])
            last_seq.add_metric(list(key), t["last_seq"])
            live.add_metric(list(key), t["live"])
            silence.add_metric(list(key), t["silence"])
        yield from counters.values()
        yield from (pending, last_seq, live, silence)

    @staticmethod
    def _client_metrics(clients: Iterable[tuple[Client, str]]) -> Iterator[Metric]:
        connected = GaugeMetricFamily("sqt_bus_connected", "1 while the NATS connection is up", labels=["client"])
        reconnects = CounterMetricFamily("sqt_bus_reconnects_total", "Reconnections to NATS after a lost connection", labels=["client"])
        received = CounterMetricFamily("sqt_bus_received_bytes_total", "Bytes received from NATS", labels=["client"])
        sent = CounterMetricFamily("sqt_bus_sent_bytes_total", "Bytes sent to NATS", labels=["client"])
        for nc, name in clients:
            if nc.is_closed:
                continue
            connected.add_metric([name], 1.0 if nc.is_connected else 0.0)
            reconnects.add_metric([name], nc.stats["reconnects"])
            received.add_metric([name], nc.stats["in_bytes"])
            sent.add_metric([name], nc.stats["out_bytes"])
        yield from (connected, reconnects, received, sent)


COLLECTOR = BusCollector()
REGISTRY.register(COLLECTOR)


def track_consumer(consumer: Consumer) -> None:
    COLLECTOR.consumers.add(consumer)


def track_client(nc: Client, name: str) -> None:
    COLLECTOR.clients[nc] = name


def track_publisher(publisher: Publisher) -> None:
    COLLECTOR.publishers.add(publisher)


def component(name: str, instance: str) -> None:
    """Say which component this process runs as (`bus.service.register` calls it)."""
    COMPONENT.labels(name, instance).set(1)
    STARTED.labels(name, instance).set(time.time())


def process_health() -> dict[str, Any]:
    """Healthy unless a NATS connection of this process is down or one of its consumers stalled.

    A consumer stalls when its live pull hears nothing (no message, no heartbeat) for longer than
    the pull's own watchdog allows, or when it has had no live session for NOT_LIVE_GRACE_S
    (rebuilding again and again, or a recovery that does not end)."""
    problems: list[str] = []
    nats: dict[str, bool] = {}
    for nc, name in list(COLLECTOR.clients.items()):
        if nc.is_closed:
            continue
        nats[name] = nc.is_connected
        if not nc.is_connected:
            problems.append(f"NATS connection {name} is down")
    consumers: dict[str, str] = {}
    for c in list(COLLECTOR.consumers):
        if not c.running:
            continue
        verdict = c.health()
        consumers[c.spec.name] = verdict or "live"
        if verdict:
            problems.append(f"{c.spec.name}: {verdict}")
    return {"ok": not problems, "problems": problems, "nats": nats, "consumers": consumers}
