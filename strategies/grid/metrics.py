"""A grid instance's Prometheus metrics, read from its published state when Prometheus scrapes.

Nothing here is measured on the grid's path: at scrape time the core's own `state_event` (the
`ops.grid.<instance>.state` message it publishes) is computed from the runtime's current state,
so the figures are exactly the ones the gateway and the operator see, and the core's decisions
are untouched. Labels: grid (the instance id), venue, symbol (one set per process). See docs/adr/0015.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.ops import BreakerState, StrategyStatus
from strategies.grid.core import GridCore
from strategies.grid.state import GridState

STATUSES: tuple[str, ...] = get_args(StrategyStatus)
BREAKERS: tuple[str, ...] = get_args(BreakerState)


class GridMetrics(Collector):
    def __init__(self, core: GridCore, state: Callable[[], GridState]) -> None:
        self.core = core
        self.state = state
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        pub = self.core.state_event(st)
        labels = ["grid", "venue", "symbol"]  # not `instance`: Prometheus gives every target that label
        key = [st.instance, st.venue, st.symbol]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(key, value)
            return g

        yield gauge("sqt_grid_position_contracts", "The grid's signed position (+ long, - short), in contracts", float(pub.position))
        yield gauge("sqt_grid_realized_pnl_quote", "Realized profit and loss, in the quote currency, net of fees", float(pub.realized_pnl))
        yield gauge(
            "sqt_grid_unrealized_pnl_quote",
            "Unrealized profit and loss at the last price, in the quote currency",
            float(pub.unrealized_pnl),
        )
        yield gauge("sqt_grid_fees_quote", "Fees paid, in the quote currency", float(st.fees))
        yield gauge("sqt_grid_open_orders", "Orders of the grid live or in flight at the venue", pub.open_orders)
        yield gauge("sqt_grid_last_price", "The last price the grid decided on", float(st.last_price or 0))
        yield gauge("sqt_grid_input_seq", "The last input sequence folded into the grid's state", st.seq)
        yield gauge("sqt_grid_faulted", "1 when an input the core could not handle halted the grid", 1.0 if st.fault else 0.0)
        fills = CounterMetricFamily("sqt_grid_fills_total", "Fills of the grid's orders booked by the core", labels=labels)
        fills.add_metric(key, st.fills)
        yield fills
        status = GaugeMetricFamily("sqt_grid_status", "The grid's status: 1 for the current one (a state set)", labels=[*labels, "status"])
        for s in STATUSES:
            status.add_metric([*key, s], 1.0 if pub.status == s else 0.0)
        yield status
        breaker = GaugeMetricFamily(
            "sqt_grid_breaker_state", "The worst risk breaker covering the grid: 1 for the current state", labels=[*labels, "state"]
        )
        for b in BREAKERS:
            breaker.add_metric([*key, b], 1.0 if st.breaker == b else 0.0)
        yield breaker
        stale = GaugeMetricFamily(
            "sqt_feed_staleness_seconds",
            "Seconds since the last market event for a market (here: the time of the grid's last ticker)",
            labels=["component", "venue", "symbol"],
        )
        if st.tick_ts:
            stale.add_metric(["grid", st.venue, st.symbol], max(0.0, time.time() - st.tick_ts / 1000))
        yield stale
