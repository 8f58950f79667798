"""Market data events: published on `md.<venue>.<symbol>.<kind>` into the MARKET stream."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas.base import Message, Side, finite, non_negative, not_empty, positive


class Market(msgspec.Struct, frozen=True, kw_only=True):
    """Trading rules of one market, in ccxt's terms (not a bus message: it travels inside them)."""

    symbol: str
    kind: Literal["spot", "swap"]
    base: str
    quote: str
    settle: str | None = None
    tick_size: Decimal  # price increment
    lot_size: Decimal  # amount increment
    min_amount: Decimal
    min_notional: Decimal
    contract_size: Decimal = Decimal(1)
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")

    def on_tick(self, price: Decimal) -> bool:
        return (price % self.tick_size) == 0

    def on_lot(self, amount: Decimal) -> bool:
        return (amount % self.lot_size) == 0


class Candle(Message, frozen=True, kw_only=True, tag="candle"):
    """One bar, published on every update while it forms and once more with `closed=True`."""

    venue: str
    symbol: str
    interval: str = "1m"
    open_time: int  # bar start, ms
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool = False
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        for name in ("open", "high", "low", "close"):
            positive(name, getattr(self, name))
        non_negative("volume", self.volume)
        if self.low > self.high:
            raise ValueError(f"`low` {self.low} is above `high` {self.high}")


class Ticker(Message, frozen=True, kw_only=True, tag="ticker"):
    venue: str
    symbol: str
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        # The most frequent message on the bus: the common case is checked inline.
        last, bid, ask = self.last, self.bid, self.ask
        if not (last.is_finite() and last > 0):
            positive("last", last)
        if bid is not None and not (bid.is_finite() and bid > 0):
            positive("bid", bid)
        if ask is not None and not (ask.is_finite() and ask > 0):
            positive("ask", ask)
        if self.bid_size is not None or self.ask_size is not None:
            non_negative("bid_size", self.bid_size)
            non_negative("ask_size", self.ask_size)


class Trade(Message, frozen=True, kw_only=True, tag="trade"):
    """A public trade on the venue (not ours: our own executions are `Fill`)."""

    venue: str
    symbol: str
    trade_id: str
    side: Side
    price: Decimal
    amount: Decimal
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        positive("price", self.price)
        positive("amount", self.amount)


class FundingRate(Message, frozen=True, kw_only=True, tag="funding_rate"):
    venue: str
    symbol: str
    funding_rate: Decimal
    next_funding_time: int  # ms; 0 for spot markets, which have no funding
    interval: str = "8h"
    predicted_rate: Decimal | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        finite("funding_rate", self.funding_rate)
        finite("predicted_rate", self.predicted_rate)
        positive("mark_price", self.mark_price)
        positive("index_price", self.index_price)


class GapMarker(Message, frozen=True, kw_only=True, tag="gap"):
    """A publisher lost its stream between `since` and `until` and backfilled what it could.

    Consumers see a gap, never silence: a strategy may widen, pause or re-anchor on it.
    """

    venue: str
    symbol: str
    account: str | None = None  # set for private (account) streams
    stream: str  # which feed: "ticker", "candle1m", "order", ...
    since: int  # last event time seen before the gap, ms
    until: int  # first event time after it, ms
    backfilled: int = 0  # events recovered over REST
    reason: str
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        not_empty("stream", self.stream)
        if self.until < self.since:
            raise ValueError(f"`until` {self.until} is before `since` {self.since}")
