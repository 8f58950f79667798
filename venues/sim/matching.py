"""Fills: resting orders against each print's traded range, takers through the book.

A resting limit order fills when a print trades through its price, at its price, as maker, up
to the share of the print's volume left after better-priced and older orders (price-time
priority). A taker fills at once through the levels `book.walk` planned, as taker.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

from schemas import ids
from schemas.account import ZERO, Fill
from schemas.market import Market
from venues.sim.accounting import Accounting
from venues.sim.book import Level, consume
from venues.sim.config import SimConfig
from venues.sim.state import EngineState, SimAccount, SimOrder, SimPosition, money
from venues.sim.views import EventViews


class Matcher:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting, views: EventViews) -> None:
        self.venue = config.venue
        self.kept = config.orders_kept
        self.markets = markets
        self.accounting = accounting
        self.views = views

    def match_resting(self, state: EngineState, symbol: str, price: Decimal, available: Decimal, ts: int, out: list[Any]) -> None:
        """Fill resting orders the print traded through (buys at or above it, sells at or below),
        best price first, then oldest, up to `available`."""
        crossed: list[tuple[Decimal, int, str, SimOrder]] = []
        for name in sorted(state.accounts):
            for order in state.accounts[name].open.values():
                if order.symbol != symbol or order.price is None:
                    continue
                if order.side == "buy" and order.price >= price:
                    crossed.append((-order.price, int(order.order_id), name, order))
                elif order.side == "sell" and order.price <= price:
                    crossed.append((order.price, int(order.order_id), name, order))
        if not crossed:
            return
        crossed.sort(key=lambda c: (c[0], c[1]))
        lot = self.markets[symbol].lot_size
        for _, _, name, order in crossed:
            if available <= 0:
                break
            qty = (min(order.remaining, available) / lot).to_integral_value(rounding=ROUND_DOWN) * lot
            if qty <= 0:
                break
            acct = state.accounts[name]
            filled = self.fill(state, name, acct, order, qty, order.price or ZERO, "maker", ts, out)
            if filled > 0:
                self.report(state, name, order, out)
            available -= filled

    def take(
        self, state: EngineState, account: str, acct: SimAccount, order: SimOrder, levels: list[Level], ts: int, out: list[Any]
    ) -> None:
        """Fill a taker through the levels planned for it: one fill per level, then its new state."""
        if not levels:
            return
        for level in levels:
            self.fill(state, account, acct, order, level.amount, level.price, "taker", ts, out)
        consume(state.markets[order.symbol], order.side, sum((level.amount for level in levels), ZERO))
        self.report(state, account, order, out)

    def report(self, state: EngineState, account: str, order: SimOrder, out: list[Any]) -> None:
        """The order, and the position or balances its fills changed."""
        market = self.markets[order.symbol]
        out.append(self.views.order(account, order))
        if market.kind == "swap":
            out.append(self.views.position(state, account, order.symbol))
            out.append(self.views.balance(state, account, self.accounting.settle(market)))
        else:
            out.append(self.views.balance(state, account, market.base))
            out.append(self.views.balance(state, account, market.quote))

    def fill(
        self,
        state: EngineState,
        account: str,
        acct: SimAccount,
        order: SimOrder,
        qty: Decimal,
        price: Decimal,
        liquidity: str,
        ts: int,
        out: list[Any],
    ) -> Decimal:
        """Execute `qty` at `price`: balances, position, the order's totals and a Fill event."""
        market = self.markets[order.symbol]
        if market.kind == "swap" and order.reduce_only:
            pos = acct.positions.get(order.symbol)
            contracts = pos.contracts if pos else ZERO
            reducible = contracts if order.side == "sell" else -contracts
            if reducible <= 0:
                acct.end(order, "canceled", ts, self.kept, reason="reduce_only_would_increase")
                out.append(self.views.order(account, order))
                return ZERO
            qty = min(qty, reducible)
        rate = market.maker_fee if liquidity == "maker" else market.taker_fee
        fee = money(price * qty * market.contract_size * rate)
        settle = self.accounting.settle(market)
        if market.kind == "swap":
            self._apply_swap_fill(acct, order, qty, price, market)
            acct.balances[settle] = acct.balances.get(settle, ZERO) - fee
        else:
            self._apply_spot_fill(acct, order, qty, price, market, fee)
        trade = str(state.next_trade)
        state.next_trade += 1
        order.filled += qty
        order.cost += price * qty
        order.fee_cost += fee
        order.updated = ts
        out.append(
            Fill(
                id=ids.fill_id(self.venue, account, trade),
                venue=self.venue,
                account=account,
                symbol=order.symbol,
                trade_id=trade,
                order_id=order.order_id,
                client_order_id=order.client_order_id,
                side=order.side,
                price=price,
                amount=qty,
                fee_cost=fee,
                fee_currency=settle,
                liquidity="maker" if liquidity == "maker" else "taker",
                ts=ts,
                ts_local=ts,
            )
        )
        if order.remaining <= 0:
            acct.end(order, "closed", ts, self.kept)
        return qty

    def _apply_swap_fill(self, acct: SimAccount, order: SimOrder, qty: Decimal, price: Decimal, market: Market) -> None:
        pos = acct.positions.setdefault(order.symbol, SimPosition())
        signed = qty if order.side == "buy" else -qty
        settle = self.accounting.settle(market)
        if pos.contracts == 0 or (pos.contracts > 0) == (signed > 0):
            total = pos.contracts + signed
            pos.entry_price = (pos.entry_price * abs(pos.contracts) + price * qty) / abs(total)
            pos.contracts = total
            return
        closing = min(qty, abs(pos.contracts))
        direction = 1 if pos.contracts > 0 else -1
        pnl = money((price - pos.entry_price) * closing * direction * market.contract_size)
        pos.realized_pnl += pnl
        acct.balances[settle] = acct.balances.get(settle, ZERO) + pnl
        pos.contracts += signed
        if pos.contracts == 0:
            pos.entry_price = ZERO
        elif (pos.contracts > 0) == (signed > 0):  # flipped: the rest opens at the fill price
            pos.entry_price = price

    def _apply_spot_fill(self, acct: SimAccount, order: SimOrder, qty: Decimal, price: Decimal, market: Market, fee: Decimal) -> None:
        base, quote = market.base, market.quote
        bal = acct.balances
        bal[quote] = bal.get(quote, ZERO) + (-price * qty - fee if order.side == "buy" else price * qty - fee)
        bal[base] = bal.get(base, ZERO) + (qty if order.side == "buy" else -qty)
        # A negative holding is a loan (only margin sells get there: plain sells were checked
        # against holdings); buying back repays it.
        if bal[base] < 0 or acct.borrowed.get(base, ZERO) > 0:
            acct.borrowed[base] = max(-bal[base], ZERO)
