"""The funding monitor's Prometheus metrics, read from its state when Prometheus scrapes.

Nothing is measured on the monitor's path (as for the risk monitor, monitors/risk/metrics.py):
the figures are the last snapshots it published and the legs it last saw. Labels are bounded by
the config: venue and symbol of its legs, its pairs, and each pair's two possible orientations
(long venue, short venue). See docs/adr/0019.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitors.funding.core import FundingCore
from monitors.funding.state import FundingState, LegSeen, leg_key

STATE_CODES = {"ok": 0, "stale": 1, "missing": 2}


class FundingMetrics(Collector):
    def __init__(self, core: FundingCore, state: Callable[[], FundingState]) -> None:
        self.core = core
        self.state = state
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        market = ["venue", "symbol"]
        current = GaugeMetricFamily("sqt_funding_rate", "Latest funding rate of a perpetual, per its own interval", labels=market)
        predicted = GaugeMetricFamily(
            "sqt_funding_predicted_rate", "Predicted next funding rate (the current one where none)", labels=market
        )
        interval = GaugeMetricFamily("sqt_funding_interval_seconds", "The perpetual's real funding interval", labels=market)
        staleness = GaugeMetricFamily(
            "sqt_funding_staleness_seconds", "Age of a leg's last funding or ticker, in event time", labels=[*market, "feed"]
        )
        for venue, symbol in self.core.cfg.legs():
            key = leg_key(venue, symbol)
            seen = st.legs.get(key) or LegSeen()
            swap = self.core.markets[key].kind == "swap"
            if swap and seen.funding_rate is not None:
                current.add_metric([venue, symbol], float(seen.funding_rate))
                rate = seen.predicted_rate if seen.predicted_rate is not None else seen.funding_rate
                predicted.add_metric([venue, symbol], float(rate))
                interval.add_metric([venue, symbol], seen.interval_ms / 1000)
            if not st.now:
                continue
            feeds = [("funding", seen.funding_ts), ("ticker", seen.book_ts)] if swap else [("ticker", seen.book_ts)]
            for feed, ts in feeds:
                staleness.add_metric([venue, symbol, feed], max(st.now - (ts or st.started), 0) / 1000)
        pair = ["pair", "long_venue", "short_venue", "symbol"]
        spread = GaugeMetricFamily("sqt_funding_spread", "Short leg's funding minus long leg's, each per its interval", labels=pair)
        apr = GaugeMetricFamily("sqt_funding_spread_apr", "Funding spread annualized over each leg's real interval", labels=pair)
        predicted_apr = GaugeMetricFamily("sqt_funding_spread_predicted_apr", "The spread's APR from the predicted rates", labels=pair)
        net = GaugeMetricFamily("sqt_funding_spread_net_apr", "APR after entry and exit costs and borrow interest", labels=pair)
        state = GaugeMetricFamily("sqt_funding_spread_state", "A pair's snapshot state: 0 ok, 1 stale, 2 missing", labels=["pair"])
        for name, snap in sorted(st.snapshots.items()):
            state.add_metric([name], STATE_CODES[snap.state])
            labels = [name, snap.long.venue, snap.short.venue, snap.symbol]
            for family, value in ((spread, snap.spread), (apr, snap.apr), (predicted_apr, snap.predicted_apr), (net, snap.net_apr)):
                if value is not None:
                    family.add_metric(labels, float(value))
        yield from (current, predicted, interval, staleness, spread, apr, predicted_apr, net, state)
