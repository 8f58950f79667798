"""What the clock charges: perpetual funding at each funding time, borrow interest each hour.

Both are paid when a tick's time crosses the boundary, so they follow the journal, not the
wall clock: a replay charges exactly what the original run charged.
"""

from __future__ import annotations

from typing import Any

from schemas.account import ZERO
from schemas.market import Market
from venues.sim.accounting import Accounting
from venues.sim.config import SimConfig
from venues.sim.state import HOUR_MS, EngineState, MarketState, money
from venues.sim.views import EventViews


class Charges:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting, views: EventViews) -> None:
        self.markets = markets
        self.specs = {m.symbol: m for m in config.markets}
        self.accounting = accounting
        self.views = views

    def funding(self, state: EngineState, ms: MarketState, symbol: str, ts: int, out: list[Any], md: list[Any]) -> None:
        interval = self.specs[symbol].funding_interval_h * HOUR_MS
        if ms.next_funding_time == 0:
            ms.next_funding_time = ts - ts % interval + interval
            return
        if ts < ms.next_funding_time:
            return
        market = self.markets[symbol]
        settle = self.accounting.settle(market)
        for name in sorted(state.accounts):
            acct = state.accounts[name]
            pos = acct.positions.get(symbol)
            if pos is None or pos.contracts == 0:
                continue
            # Longs pay shorts when the rate is positive.
            payment = money(pos.contracts * market.contract_size * ms.last * ms.funding_rate)
            acct.balances[settle] = acct.balances.get(settle, ZERO) - payment
            out.append(self.views.balance(state, name, settle))
        # One payment per tick that crosses a boundary; after downtime, resume at the next one.
        ms.next_funding_time = ts - ts % interval + interval
        md.append(self.views.funding(symbol, ms, ts))

    def interest(self, state: EngineState, out: list[Any]) -> None:
        """Charge every loan `rate x hours` for the hour boundaries the clock crossed since the last
        charge, in the borrowed asset; the loan grows by it (it is owed like the principal)."""
        ts = state.ts
        if state.next_interest == 0:
            state.next_interest = ts - ts % HOUR_MS + HOUR_MS
            return
        if ts < state.next_interest:
            return
        # One charge for every boundary crossed at once (after downtime): O(1), whatever the gap.
        hours = (ts - state.next_interest) // HOUR_MS + 1
        boundary = state.next_interest + (hours - 1) * HOUR_MS
        state.next_interest = boundary + HOUR_MS
        for name in sorted(state.accounts):
            acct = state.accounts[name]
            for asset in sorted(acct.borrowed):
                loan = acct.borrowed[asset]
                charged = money(loan * self.accounting.borrow_rate(asset) * hours) if loan > 0 else ZERO
                if charged <= 0:
                    continue
                acct.balances[asset] = acct.balances.get(asset, ZERO) - charged
                acct.borrowed[asset] = loan + charged
                out.append(self.views.interest(name, asset, loan, charged, hours, boundary, ts))
                out.append(self.views.balance(state, name, asset))
