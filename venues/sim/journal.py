"""The simulated exchange's journal: every input to its matching engine, in order.

The engine is a consumer of its journal stream (`VENUE_<VENUE>`), so after a crash it
rebuilds from a checkpoint plus the journal tail exactly like any other consumer, and a
duplicate request (same client order id within the dedupe window) is dropped by the stream.

Anyone who can publish on `venue.<venue>.journal.*` writes to it, so every entry checks its
fields as it is decoded: a number the engine could not compute with (NaN, infinities, a
price of 1e400) or a name it could not publish under is refused there, before the engine
sees it. The bounds keep every product the engine forms (price x amount, rounded to 1e-8)
within Decimal's 28 digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import cast

import msgspec

from bus.streams import DAY, MINUTE, StreamSpec
from schemas import subjects
from venues.protocol import OrderRequest

MAX_PRICE = Decimal("1e12")
MAX_QUANTITY = Decimal("1e15")  # amounts, volumes and fund movements
MAX_TS = 10**14  # milliseconds: the year 5138
MINUTE_MS = 60_000
MAX_ID_LENGTH = 128
MAX_FUNDING_RATE = Decimal(1)  # a scripted rate: 100% of the notional per interval is already absurd


def _price(name: str, value: Decimal) -> None:
    # is_finite() first: comparing a signalling NaN raises instead of answering.
    if not value.is_finite() or value <= 0 or value > MAX_PRICE:
        raise ValueError(f"`{name}` must be a positive price up to {MAX_PRICE}, got {value}")


def _quantity(name: str, value: Decimal) -> None:
    if not value.is_finite() or value < 0 or value > MAX_QUANTITY:
        raise ValueError(f"`{name}` must be zero or positive up to {MAX_QUANTITY}, got {value}")


def _ts(name: str, value: int) -> None:
    if not 0 < value < MAX_TS:
        raise ValueError(f"`{name}` must be a time in milliseconds (1..{MAX_TS}), got {value}")


def _symbol(value: str) -> None:
    try:
        subjects.symbol_token(value)
    except subjects.SubjectError as exc:
        raise ValueError(f"`symbol`: {exc}") from None


def _account(value: str) -> None:
    # The account becomes a subject token of every event the entry causes.
    try:
        subjects.name_token("account", value)
    except subjects.SubjectError as exc:
        raise ValueError(f"`account`: {exc}") from None
    if value in (subjects.WILDCARD, subjects.TAIL):
        raise ValueError(f"`account` must be a name, not the wildcard {value!r}")


def _identifier(name: str, value: str | None) -> None:
    if value is not None and not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"`{name}` must be 1-{MAX_ID_LENGTH} characters")


class Print(msgspec.Struct, frozen=True, array_like=True):
    """One market's move in a tick: the traded price and amount."""

    symbol: str
    price: Decimal
    volume: Decimal

    def __post_init__(self) -> None:
        _symbol(self.symbol)
        _price("price", self.price)
        _quantity("volume", self.volume)


class Bar(msgspec.Struct, frozen=True, array_like=True):
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def __post_init__(self) -> None:
        if not 0 <= self.open_time < MAX_TS or self.open_time % MINUTE_MS:
            raise ValueError(f"`open_time` must be a minute in milliseconds, got {self.open_time}")
        for name in ("open", "high", "low", "close"):
            _price(name, getattr(self, name))
        _quantity("volume", self.volume)
        if self.low > self.high:
            raise ValueError(f"`low` {self.low} is above `high` {self.high}")


class Tick(msgspec.Struct, frozen=True, kw_only=True, tag="tick"):
    step: int
    ts: int
    prints: list[Print]

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"`step` must be at least 1, got {self.step}")
        _ts("ts", self.ts)
        if not self.prints:
            raise ValueError("`prints` must not be empty")
        if len({p.symbol for p in self.prints}) != len(self.prints):
            raise ValueError("`prints` has two prints of one symbol")  # both would be one trade id


class Quote(msgspec.Struct, frozen=True, kw_only=True, tag="quote"):
    """Publish the market data of the prints so far (a tick's second half)."""

    step: int

    def __post_init__(self) -> None:
        if self.step < 0:
            raise ValueError(f"`step` must not be negative, got {self.step}")


class History(msgspec.Struct, frozen=True, kw_only=True, tag="history"):
    """Backfilled closed bars for a market that has none yet (fresh start)."""

    symbol: str
    bars: list[Bar]
    ts: int

    def __post_init__(self) -> None:
        _symbol(self.symbol)
        _ts("ts", self.ts)
        if not self.bars:
            raise ValueError("`bars` must not be empty")
        if any(a.open_time >= b.open_time for a, b in zip(self.bars, self.bars[1:])):
            raise ValueError("`bars` must be in ascending `open_time`, one per minute")


class Place(msgspec.Struct, frozen=True, kw_only=True, tag="place"):
    """An order request. Values an order event could not carry are refused here; values a real
    venue would answer with a rejected order (a zero amount, a price off the tick) pass, and
    the engine rejects them, so the client id is taken as it would be on the venue."""

    account: str
    order: OrderRequest
    silent: bool = False  # a test hook: applied without its account events (only with `test_hooks`)

    def __post_init__(self) -> None:
        _account(self.account)
        o = self.order
        _identifier("client_order_id", o.client_order_id)
        _symbol(o.symbol)
        _quantity("amount", o.amount)
        if o.price is not None:
            _price("price", o.price)
        if o.deadline_ms is not None and o.deadline_ms < 0:
            raise ValueError(f"`deadline_ms` must not be negative, got {o.deadline_ms}")


class Cancel(msgspec.Struct, frozen=True, kw_only=True, tag="cancel"):
    account: str
    symbol: str
    client_order_id: str | None = None
    order_id: str | None = None
    silent: bool = False  # a test hook: applied without its account events (only with `test_hooks`)

    def __post_init__(self) -> None:
        _account(self.account)
        _symbol(self.symbol)
        _identifier("client_order_id", self.client_order_id)
        _identifier("order_id", self.order_id)


class CancelAll(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_all"):
    account: str
    symbol: str

    def __post_init__(self) -> None:
        _account(self.account)
        _symbol(self.symbol)


class Fund(msgspec.Struct, frozen=True, kw_only=True, tag="fund"):
    """Operator/test adjustment of a balance (a deposit or withdrawal)."""

    account: str
    asset: str
    amount: Decimal

    def __post_init__(self) -> None:
        _account(self.account)
        if not 0 < len(self.asset) <= 32 or not (self.asset.isascii() and self.asset.isalnum()):
            raise ValueError(f"`asset` must be 1-32 letters or digits, got {self.asset!r}")
        if not self.amount.is_finite() or abs(self.amount) > MAX_QUANTITY:
            raise ValueError(f"`amount` must be a finite number up to {MAX_QUANTITY} either way, got {self.amount}")


class SetFunding(msgspec.Struct, frozen=True, kw_only=True, tag="set_funding"):
    """A test hook (`test_hooks` only): pin a perpetual's funding rate from now on (the walk stops
    moving it), or with `rate` None let the walk go on from where it stands."""

    symbol: str
    rate: Decimal | None = None
    predicted_rate: Decimal | None = None  # with a pinned rate only; unset: the rate itself

    def __post_init__(self) -> None:
        _symbol(self.symbol)
        for name in ("rate", "predicted_rate"):
            value = getattr(self, name)
            if value is not None and (not value.is_finite() or abs(value) > MAX_FUNDING_RATE):
                raise ValueError(f"`{name}` must be a rate within +-{MAX_FUNDING_RATE} per interval, got {value}")
        if self.rate is None and self.predicted_rate is not None:
            raise ValueError("`predicted_rate` comes with a pinned `rate` (a null rate unpins: the walk predicts)")


Entry = Tick | Quote | History | Place | Cancel | CancelAll | Fund | SetFunding


def journal_stream(venue: str) -> StreamSpec:
    return StreamSpec(
        name=f"VENUE_{venue.upper()}",
        subjects=(subjects.journal(venue, ">"),),
        description=f"journal of the simulated exchange {venue!r}: every engine input in order",
        max_age=30 * DAY,
        duplicate_window=15 * MINUTE,
    )


def journal_subject(venue: str, entry: Entry) -> str:
    return subjects.journal(venue, cast(str, type(entry).__struct_config__.tag))  # every entry's tag is a string


def journal_id(venue: str, entry: Entry) -> str | None:
    """Dedupe id: a place is identified by its client id, a tick by its step."""
    match entry:
        case Place(account=a, order=order):
            return f"place:{venue}:{a}:{order.client_order_id}"
        case Tick(step=step):
            return f"tick:{venue}:{step}"
        case Quote(step=step):
            return f"quote:{venue}:{step}"
        case History(symbol=s):
            return f"history:{venue}:{s}"
    return None
