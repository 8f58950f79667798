"""The Venue protocol: what the executor, reconciler and publishers need from an exchange.

One object per (venue, account). Orders, positions, balances, candles and funding come
back as the same schema types that travel on the bus, so what a venue says and what is
published are the same shape. Errors are `venues.errors` categories.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec

from schemas.account import Balance, OrderUpdate, Position
from schemas.base import OrderType, Side, TimeInForce
from schemas.market import Candle, FundingRate, Market


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    client_order_id: str
    side: Side
    order_type: OrderType = "limit"
    amount: Decimal
    price: Decimal | None = None
    post_only: bool = False
    reduce_only: bool = False
    use_margin: bool = False
    time_in_force: TimeInForce | None = None
    # The venue must not accept the order after this moment of its own clock (Binance's
    # `recvWindow`, OKX's `expTime`, Bybit's `recv_window`). It is what makes a "not found"
    # final: once the venue's clock is past it, a create still in flight can no longer land.
    deadline_ms: int | None = None


class Venue(Protocol):
    name: str
    account: str

    async def markets(self) -> dict[str, Market]: ...

    async def create_order(self, request: OrderRequest) -> OrderUpdate:
        """Place an order; raise DuplicateOrder if the client id exists (with the order)."""
        ...

    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate: ...

    async def cancel_all_orders(self, symbol: str) -> list[OrderUpdate]: ...

    async def fetch_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderUpdate]: ...

    async def fetch_positions(self, symbols: list[str] | None = None) -> list[Position]: ...

    async def fetch_balance(self) -> list[Balance]: ...

    async def fetch_ohlcv(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[Candle]: ...

    async def fetch_funding_rate(self, symbol: str) -> FundingRate: ...

    async def now_ms(self, fresh: bool = False) -> int:
        """The venue's clock (for command expiry and staleness).

        By default it may be an estimate (the last answer plus local time since). `fresh=True`
        asks the venue and returns its clock as it is, never ahead of it: the executor decides
        from it that an order's deadline has passed, so "not found" is final."""
        ...

    async def close(self) -> None: ...
