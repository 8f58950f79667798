"""Event factories in one place, so tests say what matters and nothing else."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas import ids
from schemas.account import Fill, OrderUpdate
from schemas.commands import PlaceOrder
from schemas.market import Candle, Ticker


def ticker(
    price: str | Decimal = "100", ts: int = 1_700_000_000_000, venue: str = "sim", symbol: str = "BTC/USDT:USDT", **kw: Any
) -> Ticker:
    p = Decimal(price)
    return Ticker(
        id=ids.ticker_id(venue, symbol, ts),
        venue=venue,
        symbol=symbol,
        last=p,
        bid=kw.pop("bid", p - Decimal("0.1")),
        ask=kw.pop("ask", p + Decimal("0.1")),
        ts=ts,
        ts_local=ts,
        **kw,
    )


def candle(close: str = "100", open_time: int = 1_700_000_000_000, closed: bool = True, **kw: Any) -> Candle:
    c = Decimal(close)
    return Candle(
        id=ids.candle_id("sim", "BTC/USDT:USDT", "1m", open_time, open_time + 59_999, closed),
        venue="sim",
        symbol="BTC/USDT:USDT",
        open_time=open_time,
        open=kw.pop("open", c),
        high=kw.pop("high", c),
        low=kw.pop("low", c),
        close=c,
        volume=kw.pop("volume", Decimal(1)),
        closed=closed,
        ts=open_time + 59_999,
        ts_local=open_time + 59_999,
    )


def order_update(
    client_order_id: str = "g1a0b1", status: str = "open", filled: str = "0", amount: str = "0.01", price: str = "100", **kw: Any
) -> OrderUpdate:
    f, a = Decimal(filled), Decimal(amount)
    venue, account = kw.pop("venue", "sim"), kw.pop("account", "main")
    return OrderUpdate(
        id=ids.order_event_id(venue, account, client_order_id, status, f),
        venue=venue,
        account=account,
        symbol=kw.pop("symbol", "BTC/USDT:USDT"),
        order_id=kw.pop("order_id", "1"),
        client_order_id=client_order_id,
        side=kw.pop("side", "buy"),
        price=Decimal(price),
        amount=a,
        filled=f,
        remaining=a - f,
        status=status,  # type: ignore[arg-type]
        ts=kw.pop("ts", 1_700_000_000_000),
        ts_local=kw.pop("ts_local", 1_700_000_000_000),
        **kw,
    )


def place(client_order_id: str = "g1a0b1", price: str | None = "100", amount: str = "0.01", side: str = "buy", **kw: Any) -> PlaceOrder:
    venue, account = kw.pop("venue", "sim"), kw.pop("account", "main")
    return PlaceOrder(
        id=ids.place_id(venue, account, client_order_id),
        venue=venue,
        account=account,
        symbol=kw.pop("symbol", "BTC/USDT:USDT"),
        client_order_id=client_order_id,
        side=side,  # type: ignore[arg-type]
        price=None if price is None else Decimal(price),
        amount=Decimal(amount),
        origin=kw.pop("origin", "test/t"),
        ts=kw.pop("ts", 1_700_000_000_000),
        **kw,
    )


def fill(client_order_id: str = "g1a0b1", trade_id: str = "t1", price: str = "100", amount: str = "0.01", **kw: Any) -> Fill:
    venue, account = kw.pop("venue", "sim"), kw.pop("account", "main")
    ts = kw.pop("ts", 1_700_000_000_000)
    return Fill(
        id=ids.fill_id(venue, account, trade_id),
        venue=venue,
        account=account,
        symbol=kw.pop("symbol", "BTC/USDT:USDT"),
        trade_id=trade_id,
        order_id=kw.pop("order_id", "1"),
        client_order_id=client_order_id,
        side=kw.pop("side", "buy"),
        price=Decimal(price),
        amount=Decimal(amount),
        liquidity=kw.pop("liquidity", "maker"),
        ts=ts,
        ts_local=ts,
        **kw,
    )
