"""A funding arbitrage's Prometheus metrics, read from its state when Prometheus scrapes (seed 1.7).

Like the grid's (docs/adr/0015): nothing is measured on the decision path; the books are the
ones its state event publishes. Labels: arbitrage (the instance), pair, and a bounded set per
leg (venue, symbol) or per book kind, all from the config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.ops import StrategyStatus
from strategies.arbitrage.core import ArbCore
from strategies.arbitrage.state import ArbState

STATUSES: tuple[str, ...] = get_args(StrategyStatus)
STEPS = ("idle", "leg1", "leg2", "unwind", "close1", "close2")
BLOCKS = ("none", "failure_budget", "margin_unavailable", "insufficient_collateral")


class ArbMetrics(Collector):
    def __init__(self, core: ArbCore, state: Callable[[], ArbState]) -> None:
        self.core = core
        self.state = state
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        position, total = self.core.books(st)
        labels, key = ["arbitrage", "pair"], [st.instance, st.pair]

        held = GaugeMetricFamily(
            "sqt_arb_exposure_base", "What the instance holds on each leg, signed base quantity", labels=[*labels, "venue", "symbol"]
        )
        for b in st.legs:
            held.add_metric([*key, b.venue, b.symbol], float(b.held))
        yield held
        net = GaugeMetricFamily("sqt_arb_net_exposure_base", "Both legs' holdings summed: the unhedged base quantity", labels=labels)
        net.add_metric(key, float(sum(b.held for b in st.legs)))
        yield net
        for name, book in (("position", position), ("total", total)):
            g = GaugeMetricFamily(f"sqt_arb_{name}_pnl_quote", f"The {name} books by kind, in the quote currency", labels=[*labels, "kind"])
            for kind in ("funding", "basis", "fees", "borrow", "net"):
                g.add_metric([*key, kind], float(getattr(book, kind)))
            yield g
        apr = GaugeMetricFamily("sqt_arb_net_apr", "The last spread snapshot's net APR (NaN when not ok)", labels=labels)
        sp = st.spread
        apr.add_metric(key, float(sp.net_apr) if sp is not None and sp.net_apr is not None else float("nan"))
        yield apr
        step = GaugeMetricFamily(
            "sqt_arb_saga_step", "The saga's step: 1 for the current one (idle = none in flight)", labels=[*labels, "step"]
        )
        now = st.saga.step if st.saga else "idle"
        for s in STEPS:
            step.add_metric([*key, s], 1.0 if s == now else 0.0)
        yield step
        status = GaugeMetricFamily("sqt_arb_status", "The instance's status: 1 for the current one", labels=[*labels, "status"])
        for s in STATUSES:
            status.add_metric([*key, s], 1.0 if st.status == s else 0.0)
        yield status
        blocked = GaugeMetricFamily("sqt_arb_blocked", "Why entries are blocked: 1 for the current reason", labels=[*labels, "reason"])
        for r in BLOCKS:
            blocked.add_metric([*key, r], 1.0 if (st.blocked or "none") == r else 0.0)
        yield blocked
        for name, doc, value in (
            ("sqt_arb_entries_total", "Entries completed (both legs hedged)", st.entries),
            ("sqt_arb_exits_total", "Exits completed (both legs flat)", st.exits),
            ("sqt_arb_fills_total", "Fills of the instance's orders booked by the core", st.fills),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(key, value)
            yield c
        unwinds = GaugeMetricFamily(
            "sqt_arb_unwinds_last_hour", "Unwinds within the last hour of event time (the failure budget)", labels=labels
        )
        unwinds.add_metric(key, len(st.unwinds))
        yield unwinds
