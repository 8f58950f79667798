"""What a funding-arbitrage instance knows: its two legs, the saga in flight, and its books.

These types belong to the arbitrage (a `StrategyState` event carries them as its `state`).
Everything here is checkpointed, published and replayed from, so it is plain data: frozen
msgspec structs with Decimal money. Quantities are base units unless a name says contracts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas.account import ZERO
from schemas.base import Side
from schemas.market import Market
from schemas.ops import BreakerState, FundingSpread, LiveStatus, StrategyStatus

Purpose = Literal["enter", "hedge", "unwind", "exit"]
SagaKind = Literal["enter", "exit"]
# enter: leg1 (the first leg's IOC) -> leg2 (the hedge, sized from leg1's executed quantity) ->
# done, or -> unwind (leg1 brought back to what the hedge covers). exit: close1 -> close2 -> done.
SagaStep = Literal["leg1", "leg2", "unwind", "close1", "close2"]
TERMINAL = frozenset({"closed", "canceled", "rejected", "expired"})
MARGIN_REASONS = frozenset({"margin_unavailable", "insufficient_collateral"})


class LegBook(msgspec.Struct, frozen=True, kw_only=True):
    """One leg: its market, its book, and what this instance holds on it (from its own fills)."""

    venue: str
    symbol: str
    market: Market
    held: Decimal = ZERO  # signed base quantity: + long, - short
    cash: Decimal = ZERO  # quote paid for `held`: + bought, - sold (price PnL = held x mark - cash)
    bid: Decimal | None = None
    ask: Decimal | None = None
    book_ts: int = 0

    @property
    def spot(self) -> bool:
        return self.market.kind == "spot"

    @property
    def mark(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2


class ArbOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order of the saga, from its command until the venue ends it (never freed on a guess)."""

    client_order_id: str
    leg: int
    purpose: Purpose
    side: Side
    amount: Decimal  # in the venue's units (contracts on a perpetual)
    price: Decimal
    reduce_only: bool = False
    use_margin: bool = False
    status: LiveStatus = "pending"
    order_id: str | None = None
    filled: Decimal = ZERO  # venue units, booked so far
    cost: Decimal = ZERO  # quote value of `filled`
    fee: Decimal = ZERO  # cumulative, booked so far
    sent_ts: int


class Ended(msgspec.Struct, frozen=True, array_like=True):
    """What was booked of an ended order: a late copy is recognised, a late fill booked from here."""

    leg: int
    side: Side
    filled: Decimal
    cost: Decimal
    fee: Decimal


class Saga(msgspec.Struct, frozen=True, kw_only=True):
    kind: SagaKind
    key: int  # the next funding time it was started for: part of its client ids
    step: SagaStep
    first: int  # the leg index sent first
    long_leg: int  # the leg held long (entry) / that was held long (exit)
    started_ts: int
    naked_since: int = 0  # event time the first leg was left unhedged (0 = not naked)
    retry_at: int = 0  # no new order of this saga before this event time
    remainder: Decimal = ZERO  # base quantity of leg 1 that leg 2's lot could not hedge
    reason: str = ""  # why it started (an entry's APR, an exit's trigger), then why it unwinds
    refused: str = ""  # the venue's refusal of the hedge (the unwind starts at once)


class Book(msgspec.Struct, frozen=True, kw_only=True):
    """Where the money came from, each kind apart (quote currency)."""

    funding: Decimal = ZERO  # received (+) or paid (-)
    basis: Decimal = ZERO  # both legs' price PnL, realized at the last close
    fees: Decimal = ZERO  # paid
    borrow: Decimal = ZERO  # interest on a margin short, valued at the price it was charged

    @property
    def net(self) -> Decimal:
        return self.funding + self.basis - self.fees - self.borrow


class ArbState(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    account: str
    pair: str
    legs: list[LegBook]
    status: StrategyStatus = "starting"
    seq: int = 0  # last input sequence folded in
    ts: int = 0  # event time: the latest of the inputs' times
    spread: FundingSpread | None = None  # the latest snapshot of the pair
    spread_ok_ts: int = 0  # event time of the latest `ok` snapshot
    above_since: int = 0  # event time the net APR has been at or above entry, in one direction (0: not)
    above_long: int = -1  # that direction's long leg
    saga: Saga | None = None
    orders: list[ArbOrder] = []
    ended: dict[str, Ended] = {}
    next_n: int = 0  # orders ever sent: the tail of every client id, never reused
    forgotten_below: int = 0  # orders numbered below this ended and were dropped from `ended`
    holding_long: int = -1  # the open position's long leg (-1: flat)
    position: Book = Book()  # the open position's books (since its entry)
    total: Book = Book()  # every position's, since the start
    basis_cash: Decimal = ZERO  # the position's cash at its last close, for its realized basis
    unwinds: list[int] = []  # event times of unwinds in the last hour (the failure budget)
    blocked: str | None = None  # why entries are blocked (failure_budget, margin_unavailable, ...)
    blocked_long: int = -1  # the direction a margin block is about (-1: every direction)
    paused: bool = False
    halted: bool = False
    exit_requested: bool = False  # an operator asked to close the position
    breakers: dict[str, BreakerState] = {}
    entries: int = 0
    exits: int = 0
    fills: int = 0
    stale_events: int = 0
    fault: str | None = None
    published_ts: int = 0
