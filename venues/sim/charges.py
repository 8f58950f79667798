"""What the clock charges: perpetual funding at each funding time, borrow interest each hour.

Funding is paid to or by every account with a position on the market, one `FundingPayment` each
(signed, positive when received) with its balance; the rate is the funding walk's
(venues/sim/funding.py), which moves on the same prints. Both are paid when a tick's time crosses the boundary, so they follow the journal, not the
wall clock: a replay charges exactly what the original run charged.
"""

from __future__ import annotations

from typing import Any

from schemas.account import ZERO
from schemas.market import Market
from venues.sim.accounting import Accounting
from venues.sim.config import SimConfig
from venues.sim.funding import FundingProcess
from venues.sim.state import HOUR_MS, EngineState, MarketState, money
from venues.sim.views import EventViews


class Charges:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting, views: EventViews) -> None:
        self.markets = markets
        self.specs = {m.symbol: m for m in config.markets}
        self.accounting = accounting
        self.views = views
        self.process = FundingProcess(config)

    def funding(self, state: EngineState, ms: MarketState, symbol: str, ts: int, out: list[Any], md: list[Any]) -> None:
        """On a perpetual's print: pay funding if the print crossed a funding time, then move the
        rate's walk; a FundingRate goes out when either happened."""
        interval = self.specs[symbol].funding_interval_ms
        paid = False
        if ms.next_funding_time == 0:
            ms.next_funding_time = ts - ts % interval + interval
        elif ts >= ms.next_funding_time:
            # One payment per tick that crosses a boundary, for the latest one crossed; after
            # downtime, resume at the next one. Paid at the rate in force, the one last published:
            # the walk moves only after.
            self._pay(state, ms, symbol, ts - ts % interval, ts, out)
            ms.next_funding_time = ts - ts % interval + interval
            paid = True
        if self.process.advance(ms, symbol, ts) or paid:
            md.append(self.views.funding(symbol, ms, ts))

    def _pay(self, state: EngineState, ms: MarketState, symbol: str, funding_time: int, ts: int, out: list[Any]) -> None:
        market = self.markets[symbol]
        settle = self.accounting.settle(market)
        for name in sorted(state.accounts):
            acct = state.accounts[name]
            pos = acct.positions.get(symbol)
            if pos is None or pos.contracts == 0:
                continue
            # Longs pay shorts when the rate is positive: a long (contracts > 0) receives minus
            # its notional times the rate. One signed amount moves the balance and is published.
            amount = money(-pos.contracts * market.contract_size * ms.last * ms.funding_rate)
            acct.balances[settle] = acct.balances.get(settle, ZERO) + amount
            out.append(self.views.funding_payment(name, symbol, pos.contracts, amount, ms.funding_rate, ms.last, funding_time, ts))
            out.append(self.views.balance(state, name, settle))

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
