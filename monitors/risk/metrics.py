"""The risk monitor's Prometheus metrics, read from its state when Prometheus scrapes.

Nothing is measured on the monitor's path (as for the grid, strategies/grid/metrics.py): the
figures come from the runtime's current state at scrape time. Labels are bounded by the config:
scope (the watched scopes), venue, account, symbol, breaker (a fixed set). See docs/adr/0015.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitors.risk.conditions import day_pnl
from monitors.risk.config import RiskConfig
from monitors.risk.state import RiskState, market_key
from schemas.ops import BREAKER_SEVERITY


class RiskMetrics(Collector):
    def __init__(self, cfg: RiskConfig, state: Callable[[], RiskState]) -> None:
        self.cfg = cfg
        self.state = state
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        breaker = GaugeMetricFamily("sqt_risk_breaker_state", "Breaker state of a scope: 0 ok, 1 reduce_only, 2 halted", labels=["scope"])
        for scope, change in sorted(st.published.items()):
            breaker.add_metric([scope], BREAKER_SEVERITY[change.state])
        trips = GaugeMetricFamily("sqt_risk_trips", "Latched breakers by kind (1 while latched)", labels=["scope", "breaker"])
        for scope, latches in sorted(st.latches.items()):
            for name in sorted(latches):
                trips.add_metric([scope, name], 1)
        staleness = GaugeMetricFamily(
            "sqt_risk_feed_staleness_seconds", "Time since the last market data, as the monitor judged it", labels=["venue", "symbol"]
        )
        if st.now:
            for venue, symbol in self.cfg.markets():
                seen = st.markets.get(market_key(venue, symbol))
                last = (seen.last_ts if seen else 0) or st.started
                staleness.add_metric([venue, symbol], max(st.now - last, 0) / 1000)
        held = ["venue", "account", "symbol"]
        exposure = GaugeMetricFamily("sqt_risk_exposure_quote", "Position notional at mark, in quote", labels=held)
        position = GaugeMetricFamily("sqt_risk_position_base", "Signed position in base units", labels=held)
        liquidation = GaugeMetricFamily("sqt_risk_liquidation_distance_ratio", "|mark - liquidation price| / mark", labels=held)
        notional: dict[tuple[str, str], float] = {}
        unrealized: dict[tuple[str, str], float] = {}
        for key, h in sorted(st.positions.items()):
            venue, account, symbol = key.split("|", 2)
            value = float(abs(h.base) * h.mark) if h.mark is not None else 0.0
            exposure.add_metric([venue, account, symbol], value)
            position.add_metric([venue, account, symbol], float(h.base))
            if h.mark is not None and h.liquidation is not None:
                liquidation.add_metric([venue, account, symbol], float(abs(h.mark - h.liquidation) / h.mark))
            notional[(venue, account)] = notional.get((venue, account), 0.0) + value
            unrealized[(venue, account)] = unrealized.get((venue, account), 0.0) + float(h.unrealized)
        margin = GaugeMetricFamily("sqt_risk_margin_ratio", "Equity / position notional of an account", labels=["venue", "account"])
        for (venue, account), value in sorted(notional.items()):
            cash = st.equity.get(f"{venue}|{account}")
            if cash is not None and value > 0:
                margin.add_metric([venue, account], (float(cash) + unrealized[(venue, account)]) / value)
        pnl = GaugeMetricFamily("sqt_risk_daily_pnl_quote", "Realized plus unrealized PnL since 00:00 UTC")
        pnl.add_metric([], float(day_pnl(st)))
        behind = GaugeMetricFamily("sqt_risk_behind_seconds", "How far the core's judgement is behind the wall clock")
        behind.add_metric([], max(time.time() * 1000 - st.now, 0) / 1000 if st.now else 0.0)
        yield from (breaker, trips, staleness, exposure, position, liquidation, margin, pnl, behind)
