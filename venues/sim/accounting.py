"""What an account holds, owes and has committed: read-only arithmetic over the engine state.

Checks, event views, liquidation and interest all ask the same questions (how much of an asset
is free, what the loans are worth, how much equity backs the positions); they get one answer.

Spot loans are liabilities: a coin borrowed and sold shows as a negative balance, the quote
it was sold for sits in the quote balance, and that quote is not free: it backs the loan, plus
`spot_margin_ratio` of the loan's value on top (the account's own collateral).
"""

from __future__ import annotations

from decimal import Decimal

from schemas.account import ZERO
from schemas.market import Market
from venues.sim.config import SimConfig
from venues.sim.state import EngineState, SimAccount


class Accounting:
    def __init__(self, config: SimConfig, markets: dict[str, Market]) -> None:
        self.config = config
        self.markets = markets
        self.borrow_limits = config.borrow_limits()
        # The spot market a borrowed asset is valued on (the first listed with it as base).
        self.loan_markets: dict[str, Market] = {}
        for m in markets.values():
            if m.kind == "spot":
                self.loan_markets.setdefault(m.base, m)

    def settle(self, market: Market) -> str:
        return market.settle or market.quote

    def borrow_rate(self, asset: str) -> Decimal:
        return self.config.borrow_rate.get(asset, self.config.default_borrow_rate)

    def spot_locked(self, acct: SimAccount, asset: str) -> Decimal:
        """What resting spot orders hold of `asset`: quote for buys (with the taker fee), base for sells."""
        locked = ZERO
        for o in acct.open.values():
            m = self.markets[o.symbol]
            if m.kind != "spot":
                continue
            if o.side == "buy" and m.quote == asset and o.price is not None:
                locked += o.price * o.remaining * (1 + m.taker_fee)
            elif o.side == "sell" and m.base == asset:
                locked += o.remaining
        return locked

    def loan_value(self, state: EngineState, acct: SimAccount, quote: str) -> Decimal:
        """The account's loans valued in `quote` at the last prices."""
        total = ZERO
        for asset, amount in acct.borrowed.items():
            m = self.loan_markets.get(asset)
            if amount <= 0 or m is None or m.quote != quote:
                continue
            ms = state.markets.get(m.symbol)
            if ms is not None:
                total += amount * ms.last
        return total

    def swap_exposure(self, state: EngineState, acct: SimAccount, settle: str) -> tuple[Decimal, Decimal, Decimal]:
        """(unrealized PnL, initial margin, maintenance margin) of the positions settled in `settle`."""
        upnl = initial = maintenance = ZERO
        for sym, pos in acct.positions.items():
            m = self.markets[sym]
            if m.kind != "swap" or self.settle(m) != settle or pos.contracts == 0:
                continue
            mark = state.markets[sym].last
            upnl += pos.contracts * (mark - pos.entry_price) * m.contract_size
            initial += abs(pos.contracts) * pos.entry_price * m.contract_size / self.config.leverage
            maintenance += abs(pos.contracts) * mark * m.contract_size * self.config.maintenance_margin_rate
        return upnl, initial, maintenance

    def margin(self, state: EngineState, acct: SimAccount, settle: str) -> tuple[Decimal, Decimal]:
        """(equity, maintenance margin) in `settle`: what liquidation compares. Equity is the balance
        plus unrealized PnL minus the loans valued in `settle`."""
        upnl, _, maintenance = self.swap_exposure(state, acct, settle)
        return acct.balances.get(settle, ZERO) + upnl - self.loan_value(state, acct, settle), maintenance

    def free_margin(self, state: EngineState, acct: SimAccount, settle: str) -> Decimal:
        """What is left of `settle` after swap margin, unrealized PnL, spot reservations and loans."""
        upnl, used, _ = self.swap_exposure(state, acct, settle)
        used += self.spot_locked(acct, settle)
        for o in acct.open.values():
            m = self.markets[o.symbol]
            if m.kind == "swap" and self.settle(m) == settle and not o.reduce_only and o.price is not None:
                used += o.price * o.remaining * m.contract_size / self.config.leverage
        loans = self.loan_value(state, acct, settle) * (1 + self.config.spot_margin_ratio)
        return acct.balances.get(settle, ZERO) + upnl - used - loans
