"""The simulated exchange's matching engine: a deterministic core over its journal.

`step(state, entry) -> (state, events)` with no clock and no randomness: time comes from
ticks, prices from the journal. It matches limit and market orders, fills resting orders
from each tick's traded range up to a share of its volume (so big orders fill partially),
charges maker and taker fees, keeps spot balances and perpetual positions (entry price,
unrealized PnL, leverage, margin), pays funding at each funding time, borrows for spot
shorts on margin, and keeps client order ids unique per account.

The state is mutated in place for speed (the journal carries thousands of entries per
second in benchmarks). Order checks all run before the first mutation and turn into a
rejected order event instead of an exception, so a bad request never half-applies.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_DOWN, Decimal
from typing import Any

import msgspec

from bus.contract import Inbound
from schemas import ids
from schemas.account import ZERO, Balance, Fill, OrderUpdate, Position
from schemas.base import RejectReason, Side
from schemas.market import Candle, FundingRate, GapMarker, Market, Ticker, Trade
from venues.protocol import OrderRequest
from venues.sim.config import SimConfig
from venues.sim.journal import Bar, Cancel, CancelAll, Entry, Fund, History, Place, Quote, Tick

MONEY = Decimal("0.00000001")
MINUTE_MS = 60_000
HISTORY_KEPT = 1500  # closed bars per market, for fetch_ohlcv


class SimOrder(msgspec.Struct, kw_only=True):
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: str
    price: Decimal | None
    amount: Decimal
    filled: Decimal = ZERO
    cost: Decimal = ZERO  # sum of price * amount filled
    fee_cost: Decimal = ZERO
    status: str = "open"
    post_only: bool = False
    reduce_only: bool = False
    use_margin: bool = False
    reason: str | None = None
    message: str | None = None
    created: int = 0
    updated: int = 0

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


class SimPosition(msgspec.Struct, kw_only=True):
    contracts: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO


class SimAccount(msgspec.Struct, kw_only=True):
    balances: dict[str, Decimal]  # wallet totals per asset
    borrowed: dict[str, Decimal] = msgspec.field(default_factory=dict)
    positions: dict[str, SimPosition] = msgspec.field(default_factory=dict)
    open: dict[str, SimOrder] = msgspec.field(default_factory=dict)  # by order id
    closed: dict[str, SimOrder] = msgspec.field(default_factory=dict)  # bounded, oldest first
    by_cid: dict[str, str] = msgspec.field(default_factory=dict)  # client id -> order id, bounded


class MarketState(msgspec.Struct, kw_only=True):
    last: Decimal
    bid: Decimal
    ask: Decimal
    step: int = 0
    last_ts: int = 0
    bar: Bar | None = None  # the forming bar
    history: list[Bar] = msgspec.field(default_factory=list)
    funding_rate: Decimal = Decimal("0.0001")
    next_funding_time: int = 0


class EngineState(msgspec.Struct, kw_only=True):
    ts: int = 0
    next_order: int = 1
    next_trade: int = 1
    markets: dict[str, MarketState] = msgspec.field(default_factory=dict)
    accounts: dict[str, SimAccount] = msgspec.field(default_factory=dict)
    pending: list[Trade | Ticker | Candle | FundingRate | GapMarker] = msgspec.field(default_factory=list)  # until Quote


class Rejection(Exception):
    """Raised by checks, before any mutation; becomes a rejected order event."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


def _q(value: Decimal) -> Decimal:
    rounded = value.quantize(MONEY)
    return rounded if rounded else ZERO  # "0", not "0E-8", on the wire


def _minute(ts: int) -> int:
    return ts - ts % MINUTE_MS


class SimEngine:
    """Core[EngineState, Entry] of the consumer runtime."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.venue = config.venue
        self.markets: dict[str, Market] = config.market_map()
        self._specs = {m.symbol: m for m in config.markets}
        self._gap_ms = 3 * config.tick_ms

    # ------------------------------------------------------------------ core

    def initial_state(self) -> EngineState:
        return EngineState(
            accounts={name: SimAccount(balances={a: Decimal(v) for a, v in bal.items()}) for name, bal in self.config.accounts.items()}
        )

    def step(self, state: EngineState, inbound: Inbound[Entry]) -> tuple[EngineState, list[Any]]:
        out: list[Any] = []
        entry = inbound.event
        match entry:
            case Tick():
                self._tick(state, entry, out)
            case Quote():
                self._quote(state, out)
            case Place():
                self._place(state, entry, out)
            case Cancel():
                self._cancel(state, entry, out)
            case CancelAll():
                self._cancel_all(state, entry, out)
            case History():
                self._history(state, entry, out)
            case Fund():
                self._fund(state, entry, out)
        return state, out

    # ------------------------------------------------------------------ queries (for the API)

    def order_view(self, state: EngineState, account: str, client_order_id: str | None, order_id: str | None) -> OrderUpdate | None:
        acct = state.accounts.get(account)
        if acct is None:
            return None
        if order_id is None and client_order_id is not None:
            order_id = acct.by_cid.get(client_order_id)
        if order_id is None:
            return None
        order = acct.open.get(order_id) or acct.closed.get(order_id)
        return None if order is None else self._order_event(account, order)

    def open_orders(self, state: EngineState, account: str, symbol: str | None) -> list[OrderUpdate]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self._order_event(account, o) for o in acct.open.values() if symbol is None or o.symbol == symbol]

    def positions(self, state: EngineState, account: str) -> list[Position]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self._position_event(state, account, sym) for sym in sorted(acct.positions)]

    def balances(self, state: EngineState, account: str) -> list[Balance]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self._balance_event(state, account, asset) for asset in sorted(acct.balances)]

    def candles(self, state: EngineState, symbol: str, since: int | None, limit: int | None) -> list[Candle]:
        ms = state.markets.get(symbol)
        if ms is None:
            return []
        bars = [b for b in ms.history if since is None or b.open_time >= since]
        if limit is not None:
            bars = bars[:limit] if since is not None else bars[-limit:]
        return [self._candle(symbol, b, b.open_time + MINUTE_MS - 1, True) for b in bars]

    def funding(self, state: EngineState, symbol: str) -> FundingRate | None:
        ms = state.markets.get(symbol)
        if ms is None:
            return None
        return self._funding_event(symbol, ms, state.ts)

    # ------------------------------------------------------------------ market data

    def _history(self, state: EngineState, entry: History, out: list[Any]) -> None:
        if entry.symbol not in self.markets or not entry.bars:
            return
        ms = state.markets.get(entry.symbol)
        if ms is not None and ms.history:
            return  # a market is backfilled once
        last = entry.bars[-1]
        if ms is None:  # a market with live prints keeps its own last price and quotes
            ms = self._new_market_state(entry.symbol, last.close)
            state.markets[entry.symbol] = ms
        ms.history = list(entry.bars[-HISTORY_KEPT:])
        # last_ts stays unset: the backfill is not a live print, so no gap is measured from it.
        state.ts = max(state.ts, last.open_time + MINUTE_MS - 1)
        for bar in entry.bars:
            out.append(self._candle(entry.symbol, bar, bar.open_time + MINUTE_MS - 1, True))

    def _new_market_state(self, symbol: str, price: Decimal) -> MarketState:
        bid, ask = self._quotes(symbol, price)
        return MarketState(last=price, bid=bid, ask=ask)

    def _quotes(self, symbol: str, price: Decimal) -> tuple[Decimal, Decimal]:
        m = self.markets[symbol]
        half = m.tick_size * self._specs[symbol].spread_ticks
        # A multiple of the tick (quantize alone only fixes the number of decimals).
        bid = ((price - half) / m.tick_size).to_integral_value(rounding=ROUND_DOWN) * m.tick_size
        bid = max(bid, m.tick_size)
        return bid, bid + 2 * half

    def _tick(self, state: EngineState, tick: Tick, out: list[Any]) -> None:
        """A print fills resting orders now; its market data waits for the Quote entry.

        Two entries, so that a lock-step driver can let the fills (ACCOUNT) settle before the
        prices (MARKET) go out: a strategy then sees the two streams in one order every run.
        In real time the Quote follows at once."""
        if tick.ts < state.ts:
            return  # time never goes back: a stale tick is ignored
        state.ts = tick.ts
        for p in tick.prints:
            if p.symbol not in self.markets:
                continue
            ms = state.markets.get(p.symbol)
            if ms is None:
                ms = self._new_market_state(p.symbol, p.price)
                state.markets[p.symbol] = ms
            self._print(state, ms, p.symbol, tick, p.price, p.volume, out, state.pending)

    def _quote(self, state: EngineState, out: list[Any]) -> None:
        out.extend(state.pending)
        state.pending = []

    def _print(
        self, state: EngineState, ms: MarketState, symbol: str, tick: Tick, price: Decimal, volume: Decimal, out: list[Any], md: list[Any]
    ) -> None:
        """`out` takes account events, `md` market data."""
        ts = tick.ts
        if ms.last_ts and ts - ms.last_ts > self._gap_ms:
            md.append(
                GapMarker(
                    id=ids.gap_id(self.venue, symbol, "ticker", ms.last_ts, ts),
                    venue=self.venue,
                    symbol=symbol,
                    stream="ticker",
                    since=ms.last_ts,
                    until=ts,
                    reason="simulated exchange was not running",
                    ts=ts,
                    ts_local=ts,
                )
            )
        previous = ms.last
        ms.last, ms.step, ms.last_ts = price, tick.step, ts
        ms.bid, ms.ask = self._quotes(symbol, price)
        minute = _minute(ts)
        if ms.bar is not None and ms.bar.open_time != minute:
            self._close_bar(state, ms, symbol, ts, out, md)
        bar = ms.bar
        if bar is None:
            bar = Bar(minute, price, price, price, price, volume)
        else:
            bar = Bar(bar.open_time, bar.open, max(bar.high, price), min(bar.low, price), price, bar.volume + volume)
        ms.bar = bar
        trade_key = f"{symbol}:{tick.step}"
        md.append(
            Trade(
                id=ids.trade_id(self.venue, symbol, trade_key),
                venue=self.venue,
                symbol=symbol,
                trade_id=str(tick.step),
                side="buy" if price >= previous else "sell",
                price=price,
                amount=volume,
                ts=ts,
                ts_local=ts,
            )
        )
        md.append(
            Ticker(
                id=ids.ticker_id(self.venue, symbol, ts),
                venue=self.venue,
                symbol=symbol,
                bid=ms.bid,
                ask=ms.ask,
                last=price,
                ts=ts,
                ts_local=ts,
            )
        )
        md.append(self._candle(symbol, bar, ts, False))
        self._match(state, symbol, price, volume * self.config.fill_ratio, ts, out)
        if self.markets[symbol].kind == "swap":
            self._maybe_fund(state, ms, symbol, ts, out, md)

    def _close_bar(self, state: EngineState, ms: MarketState, symbol: str, ts: int, out: list[Any], md: list[Any]) -> None:
        bar = ms.bar
        assert bar is not None
        ms.history.append(bar)
        if len(ms.history) > HISTORY_KEPT:
            del ms.history[: len(ms.history) - HISTORY_KEPT]
        ms.bar = None
        md.append(self._candle(symbol, bar, bar.open_time + MINUTE_MS - 1, True))
        if self.markets[symbol].kind == "swap":
            # A simple premium model: funding leans with the last bar's move, capped like venues do.
            move = (bar.close - bar.open) / bar.open
            ms.funding_rate = max(Decimal("-0.003"), min(Decimal("0.003"), Decimal("0.0001") + move / 2)).quantize(Decimal("0.000001"))
            md.append(self._funding_event(symbol, ms, ts))
        # Mark open positions to market once a minute, so PnL moves on screens without a fill.
        for name in sorted(state.accounts):
            pos = state.accounts[name].positions.get(symbol)
            if pos is not None and pos.contracts != 0:
                out.append(self._position_event(state, name, symbol))

    def _candle(self, symbol: str, bar: Bar, ts: int, closed: bool) -> Candle:
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

    def _funding_event(self, symbol: str, ms: MarketState, ts: int) -> FundingRate:
        spec = self._specs[symbol]
        return FundingRate(
            id=ids.funding_id(self.venue, symbol, ts),
            venue=self.venue,
            symbol=symbol,
            funding_rate=ms.funding_rate if spec.kind == "swap" else ZERO,
            next_funding_time=ms.next_funding_time if spec.kind == "swap" else 0,
            interval=f"{spec.funding_interval_h}h",
            mark_price=ms.last,
            index_price=ms.last,
            ts=ts,
            ts_local=ts,
        )

    def _maybe_fund(self, state: EngineState, ms: MarketState, symbol: str, ts: int, out: list[Any], md: list[Any]) -> None:
        interval = self._specs[symbol].funding_interval_h * 3_600_000
        if ms.next_funding_time == 0:
            ms.next_funding_time = ts - ts % interval + interval
            return
        if ts < ms.next_funding_time:
            return
        settle = self.markets[symbol].settle or self.markets[symbol].quote
        for name in sorted(state.accounts):
            acct = state.accounts[name]
            pos = acct.positions.get(symbol)
            if pos is None or pos.contracts == 0:
                continue
            # Longs pay shorts when the rate is positive.
            payment = _q(pos.contracts * self.markets[symbol].contract_size * ms.last * ms.funding_rate)
            acct.balances[settle] = acct.balances.get(settle, ZERO) - payment
            out.append(self._balance_event(state, name, settle))
        # One payment per tick that crosses a boundary; after downtime, resume at the next one.
        ms.next_funding_time = ts - ts % interval + interval
        md.append(self._funding_event(symbol, ms, ts))

    # ------------------------------------------------------------------ orders

    def _place(self, state: EngineState, entry: Place, out: list[Any]) -> None:
        account, req = entry.account, entry.order
        acct = state.accounts.get(account)
        if acct is None:
            return  # the API refuses unknown accounts before journaling; nothing to record
        if req.client_order_id in acct.by_cid:
            return  # idempotent: the existing order stands, the API returns it
        order = SimOrder(
            order_id=str(state.next_order),
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            price=req.price if req.order_type == "limit" else None,
            amount=req.amount,
            post_only=req.post_only,
            reduce_only=req.reduce_only,
            use_margin=req.use_margin,
            created=state.ts,
            updated=state.ts,
        )
        try:
            taker_price = self._check(state, acct, req)
        except Rejection as rej:
            order.status, order.reason, order.message = "rejected", rej.reason, str(rej)
            state.next_order += 1
            self._remember(acct, order, closed=True)
            out.append(self._order_event(account, order))
            return
        state.next_order += 1
        self._remember(acct, order, closed=False)
        out.append(self._order_event(account, order))
        if taker_price is not None:
            self._fill(state, account, acct, order, order.amount, taker_price, "taker", state.ts, out)
        if order.status == "open" and (req.order_type == "market" or req.time_in_force in ("IOC", "FOK")):
            # What did not fill at once does not rest.
            self._end(acct, order, "canceled" if req.order_type == "market" else "expired", state.ts)
            out.append(self._order_event(account, order))

    def _check(self, state: EngineState, acct: SimAccount, req: OrderRequest) -> Decimal | None:
        """Every reason to refuse, before anything changes; returns the taker price if marketable."""
        market = self.markets.get(req.symbol)
        if market is None:
            raise Rejection("unknown_symbol", f"unknown symbol {req.symbol}")
        ms = state.markets.get(req.symbol)
        if ms is None:
            raise Rejection("upstream_rejected", f"{req.symbol} has no price yet")
        if req.amount <= 0:
            raise Rejection("invalid", f"amount must be positive, got {req.amount}")
        if req.price is not None and (not req.price.is_finite() or req.price <= 0):
            raise Rejection("invalid", f"price must be positive, got {req.price}")
        if req.amount < market.min_amount:
            raise Rejection("below_min", f"amount {req.amount} is below the minimum {market.min_amount}")
        if not market.on_lot(req.amount):
            raise Rejection("invalid", f"amount {req.amount} is not a multiple of the lot size {market.lot_size}")
        if req.order_type == "limit":
            if req.price is None or req.price <= 0:
                raise Rejection("invalid", "a limit order needs a positive price")
            if not market.on_tick(req.price):
                raise Rejection("off_tick", f"price {req.price} is not on the tick size {market.tick_size}")
        ref_price = req.price if req.order_type == "limit" and req.price is not None else ms.last
        if ref_price * req.amount * market.contract_size < market.min_notional:
            raise Rejection("below_min", f"notional {ref_price * req.amount} is below the minimum {market.min_notional}")
        taker_price: Decimal | None = None
        if req.order_type == "market":
            taker_price = ms.ask if req.side == "buy" else ms.bid
        elif req.side == "buy" and req.price is not None and req.price >= ms.ask:
            taker_price = ms.ask
        elif req.side == "sell" and req.price is not None and req.price <= ms.bid:
            taker_price = ms.bid
        if taker_price is not None and (req.post_only or req.time_in_force == "PO"):
            raise Rejection("post_only_would_take", f"post-only {req.side} at {req.price} would take against {taker_price}")
        if req.time_in_force == "FOK" and taker_price is None:
            raise Rejection("upstream_rejected", "fill-or-kill order cannot fill now")
        price = taker_price if taker_price is not None else ref_price
        if market.kind == "swap":
            self._check_swap(state, acct, req, market, price)
        else:
            self._check_spot(state, acct, req, market, price)
        return taker_price

    def _check_swap(self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market, price: Decimal) -> None:
        pos = acct.positions.get(req.symbol)
        contracts = pos.contracts if pos else ZERO
        if req.reduce_only:
            reducing = (contracts > 0 and req.side == "sell") or (contracts < 0 and req.side == "buy")
            if not reducing:
                raise Rejection("reduce_only_would_increase", f"reduce-only {req.side} with position {contracts}")
            return
        settle = market.settle or market.quote
        needed = price * req.amount * market.contract_size / self.config.leverage
        needed += price * req.amount * market.taker_fee
        free = self._free_margin(state, acct, settle)
        if needed > free:
            raise Rejection("insufficient_balance", f"needs {_q(needed)} {settle} of margin, {_q(free)} free")

    def _check_spot(self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market, price: Decimal) -> None:
        if req.side == "buy":
            needed = price * req.amount * (1 + market.taker_fee)
            free = self._free_margin(state, acct, market.quote)  # spot buys and swap margin share it
            if needed > free:
                raise Rejection("insufficient_balance", f"needs {_q(needed)} {market.quote}, {_q(free)} free")
            return
        # Every open sell locks base, margin sells included, so two sells never spend one coin.
        free = acct.balances.get(market.base, ZERO) - self._spot_locked(acct, market.base)
        if req.amount <= free:
            return
        if not req.use_margin:
            raise Rejection("insufficient_balance", f"needs {req.amount} {market.base}, {_q(max(free, ZERO))} free")
        if not self.config.margin_enabled:
            raise Rejection("margin_unavailable", "margin trading is disabled on this account")
        # What this and every resting sell would borrow if all filled, on top of the debt.
        shortfall = req.amount - free
        limit = self.config.borrow_limit.get(market.base)
        if limit is not None and acct.borrowed.get(market.base, ZERO) + shortfall > limit:
            raise Rejection("insufficient_collateral", f"borrowing {shortfall} {market.base} exceeds the limit {limit}")

    def _spot_locked(self, acct: SimAccount, asset: str) -> Decimal:
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

    def _free_margin(self, state: EngineState, acct: SimAccount, settle: str) -> Decimal:
        """What is left of `settle` after swap margin, unrealized PnL and spot reservations."""
        equity = acct.balances.get(settle, ZERO)
        used = self._spot_locked(acct, settle)
        for sym, pos in acct.positions.items():
            m = self.markets[sym]
            if m.kind != "swap" or (m.settle or m.quote) != settle or pos.contracts == 0:
                continue
            mark = state.markets[sym].last
            equity += pos.contracts * (mark - pos.entry_price) * m.contract_size
            used += abs(pos.contracts) * pos.entry_price * m.contract_size / self.config.leverage
        for o in acct.open.values():
            m = self.markets[o.symbol]
            if m.kind == "swap" and (m.settle or m.quote) == settle and not o.reduce_only and o.price is not None:
                used += o.price * o.remaining * m.contract_size / self.config.leverage
        return equity - used

    def _remember(self, acct: SimAccount, order: SimOrder, closed: bool) -> None:
        acct.by_cid[order.client_order_id] = order.order_id
        if len(acct.by_cid) > self.config.client_ids_kept:
            for cid in list(acct.by_cid)[: len(acct.by_cid) - self.config.client_ids_kept]:
                if acct.by_cid[cid] not in acct.open:
                    del acct.by_cid[cid]
        if closed:
            self._archive(acct, order)
        else:
            acct.open[order.order_id] = order

    def _archive(self, acct: SimAccount, order: SimOrder) -> None:
        acct.open.pop(order.order_id, None)
        acct.closed[order.order_id] = order
        if len(acct.closed) > self.config.closed_orders_kept:
            for oid in list(acct.closed)[: len(acct.closed) - self.config.closed_orders_kept]:
                del acct.closed[oid]

    def _end(self, acct: SimAccount, order: SimOrder, status: str, ts: int, reason: str | None = None) -> None:
        order.status, order.updated = status, ts
        if reason is not None:
            order.reason = reason
        self._archive(acct, order)

    def _cancel(self, state: EngineState, req: Cancel, out: list[Any]) -> None:
        acct = state.accounts.get(req.account)
        if acct is None:
            return
        oid = req.order_id or acct.by_cid.get(req.client_order_id or "")
        order = acct.open.get(oid or "")
        if order is None or order.symbol != req.symbol:
            return  # unknown or already ended: the API reports the order as it stands
        self._end(acct, order, "canceled", state.ts)
        out.append(self._order_event(req.account, order))

    def _cancel_all(self, state: EngineState, req: CancelAll, out: list[Any]) -> None:
        acct = state.accounts.get(req.account)
        if acct is None:
            return
        for order in [o for o in acct.open.values() if o.symbol == req.symbol]:
            self._end(acct, order, "canceled", state.ts)
            out.append(self._order_event(req.account, order))

    def _fund(self, state: EngineState, req: Fund, out: list[Any]) -> None:
        acct = state.accounts.setdefault(req.account, SimAccount(balances={}))
        acct.balances[req.asset] = acct.balances.get(req.asset, ZERO) + req.amount
        out.append(self._balance_event(state, req.account, req.asset))

    # ------------------------------------------------------------------ matching

    def _match(self, state: EngineState, symbol: str, price: Decimal, available: Decimal, ts: int, out: list[Any]) -> None:
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
        for _, _, name, order in crossed:
            if available <= 0:
                break
            qty = min(order.remaining, available)
            lot = self.markets[symbol].lot_size
            qty = (qty / lot).to_integral_value(rounding=ROUND_DOWN) * lot
            if qty <= 0:
                break
            filled = self._fill(state, name, state.accounts[name], order, qty, order.price or ZERO, "maker", ts, out)
            available -= filled

    def _fill(
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
        market = self.markets[order.symbol]
        if market.kind == "swap" and order.reduce_only:
            pos = acct.positions.get(order.symbol)
            contracts = pos.contracts if pos else ZERO
            reducible = contracts if order.side == "sell" else -contracts
            if reducible <= 0:
                self._end(acct, order, "canceled", ts, reason="reduce_only_would_increase")
                out.append(self._order_event(account, order))
                return ZERO
            qty = min(qty, reducible)
        rate = market.maker_fee if liquidity == "maker" else market.taker_fee
        notional = price * qty * market.contract_size
        fee = _q(notional * rate)
        settle = market.settle or market.quote
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
            self._end(acct, order, "closed", ts)
        out.append(self._order_event(account, order))
        if market.kind == "swap":
            out.append(self._position_event(state, account, order.symbol))
            out.append(self._balance_event(state, account, settle))
        else:
            out.append(self._balance_event(state, account, market.base))
            out.append(self._balance_event(state, account, market.quote))
        return qty

    def _apply_swap_fill(self, acct: SimAccount, order: SimOrder, qty: Decimal, price: Decimal, market: Market) -> None:
        pos = acct.positions.setdefault(order.symbol, SimPosition())
        signed = qty if order.side == "buy" else -qty
        settle = market.settle or market.quote
        if pos.contracts == 0 or (pos.contracts > 0) == (signed > 0):
            total = pos.contracts + signed
            pos.entry_price = (pos.entry_price * abs(pos.contracts) + price * qty) / abs(total)
            pos.contracts = total
            return
        closing = min(qty, abs(pos.contracts))
        direction = 1 if pos.contracts > 0 else -1
        pnl = _q((price - pos.entry_price) * closing * direction * market.contract_size)
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
        if order.side == "buy":
            bal[base] = bal.get(base, ZERO) + qty
            bal[quote] = bal.get(quote, ZERO) - price * qty - fee
            debt = acct.borrowed.get(base, ZERO)
            if debt > 0:  # buying back what was borrowed repays it
                repay = min(debt, qty)
                acct.borrowed[base] = debt - repay
        else:
            held = bal.get(base, ZERO)
            if qty > held:  # only margin sells get here: plain sells were checked against holdings
                acct.borrowed[base] = acct.borrowed.get(base, ZERO) + (qty - max(held, ZERO))
            bal[base] = held - qty
            bal[quote] = bal.get(quote, ZERO) + price * qty - fee

    # ------------------------------------------------------------------ event views

    def _order_event(self, account: str, o: SimOrder) -> OrderUpdate:
        market = self.markets.get(o.symbol)  # None for a rejected unknown symbol
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
            fee_currency=(market.settle or market.quote) if market else None,
            reason=o.reason,  # type: ignore[arg-type]
            message=o.message,
            ts=o.updated,
            ts_local=o.updated,
        )

    def _position_event(self, state: EngineState, account: str, symbol: str) -> Position:
        pos = state.accounts[account].positions.get(symbol) or SimPosition()
        ms = state.markets.get(symbol)
        mark = ms.last if ms else None
        market = self.markets[symbol]
        upnl = _q(pos.contracts * ((mark or pos.entry_price) - pos.entry_price) * market.contract_size) if pos.contracts else ZERO
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

    def _balance_event(self, state: EngineState, account: str, asset: str) -> Balance:
        acct = state.accounts[account]
        total = acct.balances.get(asset, ZERO)
        used = self._spot_locked(acct, asset)
        fields = dict(
            venue=self.venue,
            account=account,
            asset=asset,
            free=_q(total - used),
            used=_q(used),
            total=_q(total),
            ts=state.ts,
            ts_local=state.ts,
        )
        return Balance(id=ids.content_id("balance", fields), **fields)  # type: ignore[arg-type]


def state_digest(state: EngineState) -> str:
    """A short fingerprint of the whole engine state (two runs compare it)."""
    return hashlib.blake2b(msgspec.json.encode(state), digest_size=8).hexdigest()
