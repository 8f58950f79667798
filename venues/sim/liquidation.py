"""Perpetual liquidation: an account whose equity in a settle asset falls below the maintenance
margin of its positions there is closed out at the mark, as a real venue's engine would.

Checked after every print (the mark moved), for every account, in name order, so a replay
liquidates the same accounts at the same prints. Cross margin per settle asset: every position
settled in it is closed, its open orders on those markets are canceled first (they could
reopen what is being closed), and a liquidation fee is charged. Whatever the account cannot
pay is the insurance fund's loss: a balance never goes below zero by a liquidation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.account import ZERO
from schemas.base import PositionSide
from schemas.market import Market
from venues.sim.accounting import Accounting
from venues.sim.config import SimConfig
from venues.sim.state import EngineState, SimAccount, money
from venues.sim.views import EventViews

RATIO = Decimal("0.000001")


class Liquidator:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting, views: EventViews) -> None:
        self.config = config
        self.markets = markets
        self.accounting = accounting
        self.views = views

    def check(self, state: EngineState, out: list[Any]) -> None:
        for name in sorted(state.accounts):
            acct = state.accounts[name]
            settles = sorted({self.accounting.settle(m) for m in self._swaps_held(acct)})
            for settle in settles:
                equity, maintenance = self.accounting.margin(state, acct, settle)
                if equity < maintenance:
                    self._liquidate(state, name, acct, settle, equity, maintenance, out)

    def _swaps_held(self, acct: SimAccount) -> list[Market]:
        return [m for sym, pos in acct.positions.items() if pos.contracts != 0 and (m := self.markets[sym]).kind == "swap"]

    def _liquidate(
        self, state: EngineState, name: str, acct: SimAccount, settle: str, equity: Decimal, maintenance: Decimal, out: list[Any]
    ) -> None:
        ts = state.ts
        ratio = _ratio(maintenance, equity)
        symbols = sorted(m.symbol for m in self._swaps_held(acct) if self.accounting.settle(m) == settle)
        for order in [o for o in acct.open.values() if o.symbol in symbols]:
            acct.end(order, "canceled", ts, self.config.orders_kept)
            out.append(self.views.order(name, order))
        balance = acct.balances.get(settle, ZERO)
        for symbol in symbols:
            pos = acct.positions[symbol]
            market = self.markets[symbol]
            mark = state.markets[symbol].last
            contracts = pos.contracts
            pnl = money((mark - pos.entry_price) * contracts * market.contract_size)
            pos.realized_pnl += pnl
            balance += pnl
            fee = min(money(abs(contracts) * mark * market.contract_size * self.config.liquidation_fee_rate), max(balance, ZERO))
            balance -= fee
            pos.contracts, pos.entry_price = ZERO, ZERO
            side: PositionSide = "long" if contracts > 0 else "short"
            out.append(self.views.liquidation(name, symbol, side, abs(contracts), mark, fee, ratio, ts))
            out.append(self.views.position(state, name, symbol))
        acct.balances[settle] = max(balance, ZERO)
        out.append(self.views.balance(state, name, settle))


def _ratio(maintenance: Decimal, equity: Decimal) -> Decimal | None:
    """Maintenance margin / equity; None when there is no equity left to divide by."""
    if equity <= 0:
        return None
    ratio = maintenance / equity
    return ratio.quantize(RATIO) if ratio < 1_000_000 else ratio.to_integral_value()
