"""The risk monitor's gauges, set from its state after every batch (never from the hot path).

Labels are bounded by the config: scope (the watched scopes), venue, account, symbol, breaker
(a fixed set). Names follow docs/adr/0015.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge

from monitors.risk.conditions import day_pnl
from monitors.risk.config import RiskConfig
from monitors.risk.state import RiskState, market_key
from schemas.ops import BREAKER_SEVERITY

REGISTRY = CollectorRegistry()

BREAKER = Gauge("sqt_risk_breaker_state", "Breaker state of a scope: 0 ok, 1 reduce_only, 2 halted", ["scope"], registry=REGISTRY)
TRIPS = Gauge("sqt_risk_trips", "Latched breakers by kind (1 while latched)", ["scope", "breaker"], registry=REGISTRY)
STALENESS = Gauge(
    "sqt_risk_feed_staleness_seconds", "Time since the last market data, as the monitor judged it", ["venue", "symbol"], registry=REGISTRY
)
EXPOSURE = Gauge("sqt_risk_exposure_quote", "Position notional at mark, in quote", ["venue", "symbol"], registry=REGISTRY)
POSITION = Gauge("sqt_risk_position_base", "Signed position in base units", ["venue", "account", "symbol"], registry=REGISTRY)
LIQUIDATION = Gauge("sqt_risk_liquidation_distance_ratio", "|mark - liquidation price| / mark", ["venue", "symbol"], registry=REGISTRY)
MARGIN = Gauge("sqt_risk_margin_ratio", "Equity / position notional of an account", ["venue", "account"], registry=REGISTRY)
PNL = Gauge("sqt_risk_daily_pnl_quote", "Realized plus unrealized PnL since 00:00 UTC", registry=REGISTRY)
BEHIND = Gauge("sqt_risk_behind_seconds", "How far the core's judgement is behind the wall clock", registry=REGISTRY)


def observe(cfg: RiskConfig, st: RiskState) -> None:
    for scope, change in st.published.items():
        BREAKER.labels(scope).set(BREAKER_SEVERITY[change.state])
    TRIPS.clear()
    for scope, latches in st.latches.items():
        for name in latches:
            TRIPS.labels(scope, name).set(1)
    for venue, symbol in cfg.markets():
        seen = st.markets.get(market_key(venue, symbol))
        last = (seen.last_ts if seen else 0) or st.started
        if st.now:
            STALENESS.labels(venue, symbol).set(max(st.now - last, 0) / 1000)
    equity: dict[tuple[str, str], float] = {}
    notional: dict[tuple[str, str], float] = {}
    for key, held in st.positions.items():
        venue, account, symbol = key.split("|", 2)
        value = float(abs(held.base) * held.mark) if held.mark is not None else 0.0
        EXPOSURE.labels(venue, symbol).set(value)
        POSITION.labels(venue, account, symbol).set(float(held.base))
        if held.mark is not None and held.liquidation is not None:
            LIQUIDATION.labels(venue, symbol).set(float(abs(held.mark - held.liquidation) / held.mark))
        notional[(venue, account)] = notional.get((venue, account), 0.0) + value
        equity[(venue, account)] = equity.get((venue, account), 0.0) + float(held.unrealized)
    for (venue, account), value in notional.items():
        cash = st.equity.get(f"{venue}|{account}")
        if cash is not None and value > 0:
            MARGIN.labels(venue, account).set((float(cash) + equity[(venue, account)]) / value)
    PNL.set(float(day_pnl(st)))
    BEHIND.set(max(time.time() * 1000 - st.now, 0) / 1000 if st.now else 0)
