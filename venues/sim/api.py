"""Request and reply bodies of the simulated exchange's NATS API (`venue.<venue>.api.<method>`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas import subjects
from schemas.account import Balance, OrderUpdate, Position
from schemas.market import Candle, FundingRate, Market
from venues.protocol import OrderRequest


def api_subject(venue: str, method: str) -> str:
    return subjects.venue_api(venue, method)


# Error codes in the micro service's Nats-Service-Error-Code header: a 4xx refuses the request
# for good, a 5xx says the exchange failed and the same request may succeed later.
REJECTED, NOT_FOUND, UNAVAILABLE, BAD_REQUEST = 400, 404, 503, 422


class CreateOrder(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    order: OrderRequest


class OrderRef(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    symbol: str
    client_order_id: str | None = None
    order_id: str | None = None


class AccountQuery(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    symbol: str | None = None


class OhlcvQuery(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    since: int | None = None
    limit: int | None = None


class SymbolQuery(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str


class StepRequest(msgspec.Struct, frozen=True, kw_only=True):
    ticks: int = 1
    # "both": each tick's fills then its market data; "match": one tick's fills only (its
    # market data waits); "quote": publish the market data of the ticks matched so far.
    phase: Literal["both", "match", "quote"] = "both"


class FundRequest(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    asset: str
    amount: Decimal


class SetFundingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Tests only (`test_hooks`): `rate` pins the perpetual's funding rate, null unpins it."""

    symbol: str
    rate: Decimal | None
    predicted_rate: Decimal | None = None


class OrderReply(msgspec.Struct, frozen=True, kw_only=True):
    order: OrderUpdate
    duplicate: bool = False


class OrdersReply(msgspec.Struct, frozen=True, kw_only=True):
    orders: list[OrderUpdate]


class PositionsReply(msgspec.Struct, frozen=True, kw_only=True):
    positions: list[Position]


class BalancesReply(msgspec.Struct, frozen=True, kw_only=True):
    balances: list[Balance]


class CandlesReply(msgspec.Struct, frozen=True, kw_only=True):
    candles: list[Candle]


class FundingReply(msgspec.Struct, frozen=True, kw_only=True):
    funding: FundingRate


class MarketsReply(msgspec.Struct, frozen=True, kw_only=True):
    markets: list[Market]


class TimeReply(msgspec.Struct, frozen=True, kw_only=True):
    ts: int
    step: int
    clock: str
    journal_seq: int
    unquoted: bool = False  # a tick's fills are out, its market data not yet
