"""The simulated exchange's state: what a checkpoint holds, and the arithmetic every part shares.

The engine mutates these structs in place (the journal carries thousands of entries a second
in benchmarks), so every check runs before the first mutation.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.account import ZERO
from schemas.base import RejectReason, Side
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from venues.sim.journal import Bar

MONEY = Decimal("0.00000001")
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
MAX_NOTIONAL = Decimal("1e15")  # an order's value: beyond it, money would not fit Decimal's 28 digits
MAX_BALANCE = Decimal("1e18")


class SimOrder(msgspec.Struct, kw_only=True, array_like=True):
    """An order as the venue keeps it. A list on the wire, half the size of an object (checkpoints
    hold thousands), so its fields are positional: add new ones at the end, with a default."""

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
    # Wallet totals per asset, net of loans: a borrowed coin that was sold shows as -1, and
    # `borrowed` always equals max(0, -balance) for every asset it lists.
    balances: dict[str, Decimal]
    borrowed: dict[str, Decimal] = msgspec.field(default_factory=dict)
    positions: dict[str, SimPosition] = msgspec.field(default_factory=dict)
    open: dict[str, SimOrder] = msgspec.field(default_factory=dict)  # by order id
    closed: dict[str, SimOrder] = msgspec.field(default_factory=dict)  # bounded, oldest first
    by_cid: dict[str, str] = msgspec.field(default_factory=dict)  # client id -> order id, open or closed

    def remember(self, order: SimOrder, kept: int) -> None:
        """A new order: its client id is taken for as long as the order is remembered."""
        self.by_cid[order.client_order_id] = order.order_id
        if order.status == "open":
            self.open[order.order_id] = order
        else:
            self.archive(order, kept)

    def archive(self, order: SimOrder, kept: int) -> None:
        """An order that ended. The oldest closed orders are forgotten with their client ids,
        together, so a remembered client id always answers with its real order."""
        self.open.pop(order.order_id, None)
        self.closed[order.order_id] = order
        while len(self.closed) > kept:
            oldest = self.closed.pop(next(iter(self.closed)))
            if self.by_cid.get(oldest.client_order_id) == oldest.order_id:
                del self.by_cid[oldest.client_order_id]

    def end(self, order: SimOrder, status: str, ts: int, kept: int, reason: str | None = None) -> None:
        order.status, order.updated = status, ts
        if reason is not None:
            order.reason = reason
        self.archive(order, kept)


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
    # The funding walk (venues/sim/funding.py): the step of `funding_every_ms` it last moved at
    # (-1: not started), its expectation one interval ahead, and whether a test pinned the rate.
    funding_step: int = -1
    funding_predicted: Decimal | None = None
    funding_pinned: bool = False
    # What takers took from each side of the book since the last print (it refills on a print).
    ask_taken: Decimal = ZERO
    bid_taken: Decimal = ZERO


class EngineState(msgspec.Struct, kw_only=True):
    ts: int = 0
    next_order: int = 1
    next_trade: int = 1
    next_interest: int = 0  # the hour boundary at which borrow interest is next charged
    markets: dict[str, MarketState] = msgspec.field(default_factory=dict)
    accounts: dict[str, SimAccount] = msgspec.field(default_factory=dict)
    pending: list[Trade | Ticker | Candle | FundingRate | GapMarker] = msgspec.field(default_factory=list)  # until Quote


class Rejection(Exception):
    """Raised by checks, before any mutation; becomes a rejected order event."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


def money(value: Decimal) -> Decimal:
    rounded = value.quantize(MONEY)
    return rounded if rounded else ZERO  # "0", not "0E-8", on the wire


def minute(ts: int) -> int:
    return ts - ts % MINUTE_MS
