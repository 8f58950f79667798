"""The engine's state as bus events: orders, positions, balances, candles, funding, interest, liquidations.

Every view is a pure function of the state, and every id is deterministic (a natural key, or a
digest of what the event says), so a replayed journal republishes nothing new.
"""

from __future__ import annotations

from decimal import Decimal

from schemas import ids
from schemas.account import ZERO, Balance, BorrowInterest, FundingPayment, Liquidation, OrderUpdate, Position
from schemas.base import PositionSide
from schemas.market import Candle, FundingRate, Market
from venues.sim.accounting import Accounting
from venues.sim.config import SimConfig, SimMarket
from venues.sim.funding import interval_text
from venues.sim.journal import Bar
from venues.sim.state import HOUR_MS, EngineState, MarketState, SimOrder, SimPosition, money


class EventViews:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting) -> None:
        self.config = config
        self.venue = config.venue
        self.markets = markets
        self.specs: dict[str, SimMarket] = {m.symbol: m for m in config.markets}
        self.accounting = accounting

    def order(self, account: str, o: SimOrder) -> OrderUpdate:
        market = self.markets.get(o.symbol)
        return OrderUpdate(
            id=ids.order_event_id(self.venue, account, o.client_order_id, o.status, o.filled),
            venue=self.venue,
            account=account,
            symbol=o.symbol,
            order_id=o.order_id,
            client_order_id=o.client_order_id,
            side=o.side,
            order_type="market" if o.order_type == "market" else "limit",
            price=o.price,
            amount=o.amount,
            filled=o.filled,
            remaining=max(o.remaining, ZERO),
            average=(o.cost / o.filled).quantize(market.tick_size / 100) if o.filled > 0 and market else None,
            status=o.status,  # type: ignore[arg-type]
            post_only=o.post_only,
            reduce_only=o.reduce_only,
            fee_cost=o.fee_cost,
            fee_currency=self.accounting.settle(market) if market else None,
            reason=o.reason,  # type: ignore[arg-type]
            message=o.message,
            ts=o.updated,
            ts_local=o.updated,
        )

    def position(self, state: EngineState, account: str, symbol: str) -> Position:
        pos = state.accounts[account].positions.get(symbol) or SimPosition()
        ms = state.markets.get(symbol)
        mark = ms.last if ms else None
        market = self.markets[symbol]
        upnl = money(pos.contracts * ((mark or pos.entry_price) - pos.entry_price) * market.contract_size) if pos.contracts else ZERO
        fields = dict(
            venue=self.venue,
            account=account,
            symbol=symbol,
            side=None if pos.contracts == 0 else ("long" if pos.contracts > 0 else "short"),
            contracts=abs(pos.contracts),
            entry_price=pos.entry_price if pos.contracts else None,
            mark_price=mark,
            unrealized_pnl=upnl,
            realized_pnl=pos.realized_pnl,
            leverage=self.config.leverage,
            ts=state.ts,
            ts_local=state.ts,
        )
        return Position(id=ids.content_id("position", fields), **fields)  # type: ignore[arg-type]

    def balance(self, state: EngineState, account: str, asset: str) -> Balance:
        acct = state.accounts[account]
        total = acct.balances.get(asset, ZERO)
        used = self.accounting.spot_locked(acct, asset)
        fields = dict(
            venue=self.venue,
            account=account,
            asset=asset,
            free=money(total - used),
            used=money(used),
            total=money(total),
            ts=state.ts,
            ts_local=state.ts,
        )
        return Balance(id=ids.content_id("balance", fields), **fields)  # type: ignore[arg-type]

    def candle(self, symbol: str, bar: Bar, ts: int, closed: bool) -> Candle:
        return Candle(
            id=ids.candle_id(self.venue, symbol, "1m", bar.open_time, ts, closed),
            venue=self.venue,
            symbol=symbol,
            interval="1m",
            open_time=bar.open_time,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            closed=closed,
            ts=ts,
            ts_local=ts,
        )

    def funding(self, symbol: str, ms: MarketState, ts: int, *, scripted: int | None = None) -> FundingRate:
        """The market's funding now. A rate scripted by the test hook (journal entry `scripted`)
        can change at a time a FundingRate was already published for: its id names the entry."""
        spec = self.specs[symbol]
        swap = spec.kind == "swap"
        fields = dict(
            venue=self.venue,
            symbol=symbol,
            funding_rate=ms.funding_rate if swap else ZERO,
            next_funding_time=ms.next_funding_time if swap else 0,
            interval=interval_text(spec.funding_interval_ms),
            predicted_rate=(ms.funding_rate if ms.funding_predicted is None else ms.funding_predicted) if swap else None,
            mark_price=ms.last,
            index_price=ms.last,
            ts=ts,
            ts_local=ts,
        )
        event_id = ids.funding_id(self.venue, symbol, ts) if scripted is None else ids.funding_set_id(self.venue, symbol, scripted)
        return FundingRate(id=event_id, **fields)  # type: ignore[arg-type]

    def funding_payment(
        self, account: str, symbol: str, contracts: Decimal, amount: Decimal, rate: Decimal, mark: Decimal, funding_time: int, ts: int
    ) -> FundingPayment:
        return FundingPayment(
            id=ids.funding_payment_id(self.venue, account, symbol, funding_time),
            venue=self.venue,
            account=account,
            symbol=symbol,
            asset=self.accounting.settle(self.markets[symbol]),
            amount=amount,
            funding_rate=rate,
            contracts=contracts,
            mark_price=mark,
            funding_time=funding_time,
            ts=ts,
            ts_local=ts,
        )

    def interest(
        self, account: str, asset: str, borrowed: Decimal, interest: Decimal, hours: int, boundary: int, ts: int
    ) -> BorrowInterest:
        return BorrowInterest(
            id=ids.interest_id(self.venue, account, asset, boundary),
            venue=self.venue,
            account=account,
            asset=asset,
            amount_borrowed=borrowed,
            interest=interest,
            interest_rate=self.accounting.borrow_rate(asset) * hours,
            period_ms=hours * HOUR_MS,
            ts=ts,
            ts_local=ts,
        )

    def liquidation(
        self,
        account: str,
        symbol: str,
        side: PositionSide,
        contracts: Decimal,
        price: Decimal,
        fee: Decimal,
        ratio: Decimal | None,
        ts: int,
    ) -> Liquidation:
        return Liquidation(
            id=ids.liquidation_id(self.venue, account, symbol, ts),
            venue=self.venue,
            account=account,
            symbol=symbol,
            side=side,
            contracts=contracts,
            price=price,
            fee=fee,
            fee_currency=self.accounting.settle(self.markets[symbol]),
            margin_ratio=ratio,
            ts=ts,
            ts_local=ts,
        )
