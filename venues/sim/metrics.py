"""The simulated exchange's Prometheus metrics, in a registry of its own (one per service).

Requests are counted as they are answered (they are few: orders and queries, not ticks). What
the engine publishes is counted by a thin wrapper around the engine, only while the consumer is
live (a replay at start folds inputs whose events an earlier process published). Open orders
and feed staleness are read from the engine's state when Prometheus scrapes. See docs/adr/0015.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.contract import Inbound
from schemas.account import Fill
from schemas.market import Ticker

if TYPE_CHECKING:
    from venues.sim.engine import EngineState, SimEngine
    from venues.sim.journal import Entry

# The error codes of venues/sim/api.py, as outcomes.
OUTCOMES = {"400": "rejected", "404": "not_found", "422": "bad_request", "503": "unavailable"}


class CountingEngine:
    """The engine, counting the events it emits while `live()` says the consumer is live."""

    def __init__(self, engine: SimEngine, live: Callable[[], bool]) -> None:
        self.engine = engine
        self.live = live
        self.events: defaultdict[str, int] = defaultdict(int)  # by event type
        self.fills: defaultdict[str, int] = defaultdict(int)  # by symbol
        self.last_ticker: dict[str, float] = {}  # symbol -> wall time its last ticker was emitted

    def initial_state(self) -> EngineState:
        return self.engine.initial_state()

    def step(self, state: EngineState, inbound: Inbound[Entry]) -> tuple[EngineState, Sequence[Any]]:
        state, out = self.engine.step(state, inbound)
        if out and self.live():
            events, now = self.events, 0.0
            for event in out:
                events[type(event).__name__] += 1
                if type(event) is Fill:
                    self.fills[event.symbol] += 1
                elif type(event) is Ticker:
                    now = now or time.time()
                    self.last_ticker[event.symbol] = now
        return state, out


class SimMetrics(Collector):
    def __init__(self, venue: str, engine: SimEngine, counting: CountingEngine, state: Callable[[], EngineState]) -> None:
        self.venue = venue
        self.engine = engine
        self.counting = counting
        self.state = state
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sqt_sim_requests_total",
            "Venue API requests answered, by method and outcome",
            ["venue", "method", "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "sqt_sim_request_seconds",
            "From a Venue API request's arrival to its answer (journaled and applied for orders)",
            ["venue", "method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.registry.register(self)

    def answered(self, method: str, code: str, seconds: float) -> None:
        """One request answered: `code` is "" for a success, else the error code sent."""
        self.requests.labels(self.venue, method, OUTCOMES.get(code, "error") if code else "ok").inc()
        self.request_seconds.labels(self.venue, method).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        c, venue = self.counting, self.venue
        events = CounterMetricFamily(
            "sqt_sim_events_total", "Events the exchange emitted for publishing, by type", labels=["venue", "type"]
        )
        for kind, n in sorted(c.events.items()):
            events.add_metric([venue, kind], n)
        fills = CounterMetricFamily("sqt_sim_fills_total", "Fills of resting or taking orders, by market", labels=["venue", "symbol"])
        for symbol, n in sorted(c.fills.items()):
            fills.add_metric([venue, symbol], n)
        st = self.state()
        open_orders = GaugeMetricFamily("sqt_sim_open_orders", "Orders open at the exchange", labels=["venue", "account", "symbol"])
        for account, acct in sorted(st.accounts.items()):
            per: defaultdict[str, int] = defaultdict(int)
            for symbol in self.engine.markets:
                per[symbol] = 0
            for o in acct.open.values():
                per[o.symbol] += 1
            for symbol, n in sorted(per.items()):
                open_orders.add_metric([venue, account, symbol], n)
        stale = GaugeMetricFamily(
            "sqt_feed_staleness_seconds",
            "Seconds since the last market event for a market (here: the exchange's last ticker)",
            labels=["component", "venue", "symbol"],
        )
        last_publish = GaugeMetricFamily(
            "sqt_sim_last_ticker_timestamp_seconds",
            "When the exchange last emitted a ticker, seconds since the epoch",
            labels=["venue", "symbol"],
        )
        now = time.time()
        for symbol, ms in sorted(st.markets.items()):
            seen = c.last_ticker.get(symbol) or (ms.last_ts / 1000 if ms.last_ts else 0.0)
            if seen:
                stale.add_metric(["sim", venue, symbol], max(0.0, now - seen))
                last_publish.add_metric([venue, symbol], seen)
        yield from (events, fills, open_orders, stale, last_publish)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time: nothing to check at registration
