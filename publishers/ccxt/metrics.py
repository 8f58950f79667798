"""The ccxt publisher's Prometheus metrics (bounded labels: venue, feed, kind, reason, symbol from
the config; never an id or error text). See docs/adr/0015 for the naming.

Counters are bumped where things happen (messages, events, refusals, reconnects, gaps); how long
each stream has been quiet is read from the running loops when Prometheus scrapes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()

MESSAGES = Counter(
    "sqt_publisher_messages_total",
    "Venue messages received (a watch_* result or a poll's answer), by feed",
    ["venue", "feed"],
    registry=REGISTRY,
)
EVENTS = Counter("sqt_publisher_events_total", "Events handed to the bus, by kind", ["venue", "kind"], registry=REGISTRY)
REJECTED = Counter(
    "sqt_publisher_rejected_total",
    "Venue messages refused and not published: `parse` (not a structure we can read) or `sanity` (an unbelievable price)",
    ["venue", "feed", "reason"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "sqt_publisher_reconnects_total",
    "Streams reconnected: `disconnect` (the connection failed), `silence` (quiet past its limit), `error` (the venue refused)",
    ["venue", "feed", "reason"],
    registry=REGISTRY,
)
GAPS = Counter("sqt_publisher_gaps_total", "Gaps opened (a marker published), by feed", ["venue", "feed"], registry=REGISTRY)
GAP_SECONDS = Histogram(
    "sqt_publisher_gap_seconds",
    "Length of a closed gap: from the last event before it to the first after it, on the venue's clock",
    ["venue", "feed"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86_400),
    registry=REGISTRY,
)
BACKFILLED = Counter(
    "sqt_publisher_backfilled_total", "Events recovered over REST after a gap (or at start), by feed", ["venue", "feed"], registry=REGISTRY
)
RATE_LIMIT_WAIT = Counter(
    "sqt_publisher_rate_limit_wait_seconds_total",
    "Seconds REST calls waited in ccxt's rate limiter or for a venue that asked us to slow down",
    ["venue"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "sqt_publisher_rate_limited_total",
    "REST answers that said slow down (ccxt RateLimitExceeded / DDoSProtection)",
    ["venue"],
    registry=REGISTRY,
)
PUBLISH_FAILURES = Counter(
    "sqt_publisher_publish_failures_total", "Events JetStream did not acknowledge after retries (lost)", ["venue"], registry=REGISTRY
)
HANDLE_SECONDS = Histogram(
    "sqt_publisher_handle_seconds",
    "Time one venue message spends in our code: normalize, check, hand to the publisher",
    ["venue", "feed"],
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1),
    registry=REGISTRY,
)


class Observed(Protocol):
    """What the scrape reads from a running feed loop."""

    feed: str
    symbol: str
    market_data: bool  # counts towards the market's staleness

    def last_message_at(self) -> float: ...  # wall time of the last venue message (0: none yet)

    def up(self) -> bool: ...


class LoopCollector(Collector):
    def __init__(self) -> None:
        self.loops: weakref.WeakKeyDictionary[Observed, str] = weakref.WeakKeyDictionary()  # loop -> venue

    def collect(self) -> Iterator[Metric]:
        labels = ["venue", "feed", "symbol"]
        silence = GaugeMetricFamily("sqt_publisher_silence_seconds", "Seconds since the feed's last venue message", labels=labels)
        up = GaugeMetricFamily(
            "sqt_publisher_stream_up", "1 while the feed's stream delivers, 0 in a gap or before its first message", labels=labels
        )
        stale = GaugeMetricFamily(
            "sqt_feed_staleness_seconds",
            "Seconds since the last market event for a market (here: the newest of the publisher's market data feeds)",
            labels=["component", "venue", "symbol"],
        )
        now = time.time()
        newest: dict[tuple[str, str], float] = {}
        for loop, venue in list(self.loops.items()):
            seen = loop.last_message_at()
            up.add_metric([venue, loop.feed, loop.symbol], 1.0 if loop.up() else 0.0)
            if seen:
                silence.add_metric([venue, loop.feed, loop.symbol], max(0.0, now - seen))
                if loop.market_data:
                    key = (venue, loop.symbol)
                    newest[key] = max(newest.get(key, 0.0), seen)
        for (venue, symbol), seen in sorted(newest.items()):
            stale.add_metric(["publisher", venue, symbol], max(0.0, now - seen))
        yield from (silence, up, stale)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time


LOOPS = LoopCollector()
REGISTRY.register(LOOPS)


def track(loop: Observed, venue: str) -> None:
    LOOPS.loops[loop] = venue
