"""Account events: `acct.<venue>.<account>.<symbol>.<kind>` (balances per asset) in ACCOUNT.

Field names follow ccxt's unified order / trade / position / balance structures in
snake_case. The order's ccxt `type` is `order_type` here, because `type` is the tag.
"""

from __future__ import annotations

from decimal import Decimal

from schemas.base import (
    Liquidity,
    MarginMode,
    Message,
    OrderStatus,
    OrderType,
    PositionSide,
    RejectReason,
    Side,
    finite,
    non_negative,
    not_empty,
    positive,
)

ZERO = Decimal(0)


class OrderUpdate(Message, frozen=True, kw_only=True, tag="order"):
    """The state of one order after a change: accepted, (partly) filled, canceled, rejected."""

    venue: str
    account: str
    symbol: str
    order_id: str | None = None  # None when rejected before the venue assigned one
    client_order_id: str
    side: Side
    order_type: OrderType = "limit"
    price: Decimal | None = None
    amount: Decimal
    filled: Decimal = ZERO
    remaining: Decimal
    average: Decimal | None = None
    status: OrderStatus
    post_only: bool = False
    reduce_only: bool = False
    fee_cost: Decimal = ZERO  # cumulative
    fee_currency: str | None = None
    reason: RejectReason | None = None
    message: str | None = None
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        not_empty("client_order_id", self.client_order_id)
        positive("price", self.price)
        non_negative("amount", self.amount)
        non_negative("filled", self.filled)
        non_negative("remaining", self.remaining)
        positive("average", self.average)
        finite("fee_cost", self.fee_cost)


class Fill(Message, frozen=True, kw_only=True, tag="fill"):
    """One execution of one of our orders."""

    venue: str
    account: str
    symbol: str
    trade_id: str
    order_id: str
    client_order_id: str
    side: Side
    price: Decimal
    amount: Decimal
    fee_cost: Decimal = ZERO
    fee_currency: str | None = None
    liquidity: Liquidity
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        positive("price", self.price)
        positive("amount", self.amount)
        finite("fee_cost", self.fee_cost)


class Position(Message, frozen=True, kw_only=True, tag="position"):
    """A derivatives position; `side` is None and `contracts` 0 when flat."""

    venue: str
    account: str
    symbol: str
    side: PositionSide | None = None
    contracts: Decimal = ZERO
    contract_size: Decimal = Decimal(1)
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    leverage: Decimal = Decimal(1)
    liquidation_price: Decimal | None = None
    margin_mode: MarginMode = "cross"
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        non_negative("contracts", self.contracts)
        positive("contract_size", self.contract_size)
        positive("entry_price", self.entry_price)
        positive("mark_price", self.mark_price)
        finite("unrealized_pnl", self.unrealized_pnl)
        finite("realized_pnl", self.realized_pnl)
        positive("leverage", self.leverage)
        if self.contracts > 0 and self.side is None:
            raise ValueError("a position with contracts needs a `side`")


class Balance(Message, frozen=True, kw_only=True, tag="balance"):
    venue: str
    account: str
    asset: str
    free: Decimal
    used: Decimal
    total: Decimal
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        not_empty("asset", self.asset)
        finite("free", self.free)
        non_negative("used", self.used)
        finite("total", self.total)


class BorrowInterest(Message, frozen=True, kw_only=True, tag="borrow_interest"):
    """Interest charged on a margin loan (ccxt's borrow interest structure): one per charge."""

    venue: str
    account: str
    asset: str
    amount_borrowed: Decimal  # the loan the interest was charged on
    interest: Decimal  # charged this time, in `asset`
    interest_rate: Decimal  # per `period_ms`
    period_ms: int = 3_600_000
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        not_empty("asset", self.asset)
        non_negative("amount_borrowed", self.amount_borrowed)
        non_negative("interest", self.interest)
        non_negative("interest_rate", self.interest_rate)


class FundingPayment(Message, frozen=True, kw_only=True, tag="funding_payment"):
    """Funding paid or received on a perpetual position at one funding time (ccxt's funding
    history entry): `amount` is signed, positive when the account received it."""

    venue: str
    account: str
    symbol: str
    asset: str  # the settle asset the payment moved
    amount: Decimal
    funding_rate: Decimal
    contracts: Decimal  # the position paid on, signed: + long, - short
    mark_price: Decimal | None = None
    funding_time: int  # ms: the funding time it was paid for
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        not_empty("asset", self.asset)
        finite("amount", self.amount)
        finite("funding_rate", self.funding_rate)
        finite("contracts", self.contracts)
        positive("mark_price", self.mark_price)


class Liquidation(Message, frozen=True, kw_only=True, tag="liquidation"):
    """The venue closed a position because its margin fell below maintenance."""

    venue: str
    account: str
    symbol: str
    side: PositionSide  # of the position that was closed
    contracts: Decimal
    price: Decimal
    fee: Decimal = ZERO
    fee_currency: str | None = None
    margin_ratio: Decimal | None = None  # maintenance margin / equity when it triggered
    ts: int
    ts_local: int

    def __post_init__(self) -> None:
        positive("contracts", self.contracts)
        positive("price", self.price)
        non_negative("fee", self.fee)
