"""`SimVenue`: the Venue protocol spoken to the simulated exchange over NATS request/reply.

It behaves like a real exchange client: a repeated client order id raises DuplicateOrder
(carrying the existing order), a rejection raises OrderRejected with its category, and a
timeout, an absent exchange or any server-side failure (a 5xx code) raises Transient, which
the executor retries.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, TypeVar, get_args

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from schemas.account import Balance, OrderUpdate, Position
from schemas.base import RejectReason
from schemas.codec import encode
from schemas.market import Candle, FundingRate, Market
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient, VenueError
from venues.protocol import OrderRequest
from venues.sim import api

R = TypeVar("R")

_REJECTED_BY_REASON = {
    "margin_unavailable": "MarginUnavailable",
    "insufficient_collateral": "InsufficientCollateral",
}


class SimVenue:
    def __init__(self, nc: Client, venue: str = "sim", account: str = "main", *, timeout: float = 3.0) -> None:
        self.nc = nc
        self.name = venue
        self.account = account
        self.timeout = timeout
        self._markets: dict[str, Market] | None = None
        self._clock: tuple[int, float, str] | None = None  # (venue ts, monotonic when seen, mode)

    async def _call(self, method: str, body: Any, reply_type: type[R]) -> R:
        try:
            msg = await self.nc.request(
                api.api_subject(self.name, method), encode(body) if body is not None else b"{}", timeout=self.timeout
            )
        except NoRespondersError:
            raise Transient(f"simulated exchange {self.name!r} is not running") from None
        except (NatsTimeout, TimeoutError):
            raise Transient(f"simulated exchange {self.name!r} did not answer {method} in {self.timeout}s") from None
        headers = msg.headers or {}
        code = headers.get("Nats-Service-Error-Code")
        if code:
            text = headers.get("Nats-Service-Error", "")
            reason, _, message = text.partition(": ")
            raise _error(int(code), reason, message or text)
        return msgspec.json.decode(msg.data, type=reply_type)

    async def markets(self) -> dict[str, Market]:
        if self._markets is None:
            reply = await self._call("markets", None, api.MarketsReply)
            self._markets = {m.symbol: m for m in reply.markets}
        return self._markets

    async def create_order(self, request: OrderRequest) -> OrderUpdate:
        reply = await self._call("create_order", api.CreateOrder(account=self.account, order=request), api.OrderReply)
        self._saw(reply.order.ts)
        if reply.duplicate:
            raise DuplicateOrder(f"client order id {request.client_order_id} already used", existing=reply.order)
        if reply.order.status == "rejected":
            raise _rejected(reply.order)
        return reply.order

    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        ref = api.OrderRef(account=self.account, symbol=symbol, client_order_id=client_order_id, order_id=order_id)
        return (await self._call("cancel_order", ref, api.OrderReply)).order

    async def cancel_all_orders(self, symbol: str) -> list[OrderUpdate]:
        return (await self._call("cancel_all", api.AccountQuery(account=self.account, symbol=symbol), api.OrdersReply)).orders

    async def fetch_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        ref = api.OrderRef(account=self.account, symbol=symbol, client_order_id=client_order_id, order_id=order_id)
        return (await self._call("fetch_order", ref, api.OrderReply)).order

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        return (await self._call("open_orders", api.AccountQuery(account=self.account, symbol=symbol), api.OrdersReply)).orders

    async def fetch_positions(self, symbols: list[str] | None = None) -> list[Position]:
        reply = await self._call("positions", api.AccountQuery(account=self.account), api.PositionsReply)
        return [p for p in reply.positions if symbols is None or p.symbol in symbols]

    async def fetch_balance(self) -> list[Balance]:
        return (await self._call("balance", api.AccountQuery(account=self.account), api.BalancesReply)).balances

    async def fetch_ohlcv(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[Candle]:
        return (await self._call("ohlcv", api.OhlcvQuery(symbol=symbol, since=since, limit=limit), api.CandlesReply)).candles

    async def fetch_funding_rate(self, symbol: str) -> FundingRate:
        return (await self._call("funding", api.SymbolQuery(symbol=symbol), api.FundingReply)).funding

    async def now_ms(self, fresh: bool = False) -> int:
        """The exchange's clock; in realtime mode advanced locally between answers, unless
        `fresh`: then the engine's own clock, asked now (never ahead of what it applies)."""
        if fresh:
            reply = await self._call("time", None, api.TimeReply)
            self._clock = (reply.ts, time.monotonic(), reply.clock)
            return reply.ts
        if self._clock is None or time.monotonic() - self._clock[1] > 1.0:
            reply = await self._call("time", None, api.TimeReply)
            self._clock = (reply.ts, time.monotonic(), reply.clock)
        ts, seen, mode = self._clock
        return ts + (int((time.monotonic() - seen) * 1000) if mode == "realtime" else 0)

    def _saw(self, ts: int) -> None:
        if self._clock is not None and ts > self._clock[0]:
            self._clock = (ts, time.monotonic(), self._clock[2])

    async def step(self, ticks: int = 1, phase: str = "both") -> api.TimeReply:
        """Lockstep clock only: advance the exchange by `ticks` ticks and wait until applied
        (`phase` "match" then "quote" splits one tick into its fills and its market data)."""
        return await self._call("step", api.StepRequest(ticks=ticks, phase=phase), api.TimeReply)  # type: ignore[arg-type]

    async def time(self) -> api.TimeReply:
        return await self._call("time", None, api.TimeReply)

    async def fund(self, asset: str, amount: Any) -> list[Balance]:
        return (await self._call("fund", api.FundRequest(account=self.account, asset=asset, amount=amount), api.BalancesReply)).balances

    async def hidden_create_order(self, request: OrderRequest) -> OrderUpdate:
        """Tests only (`test_hooks`): place an order whose account events are lost."""
        return (await self._call("hidden_create_order", api.CreateOrder(account=self.account, order=request), api.OrderReply)).order

    async def hidden_cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        """Tests only (`test_hooks`): take an order off the book; its account event is lost."""
        ref = api.OrderRef(account=self.account, symbol=symbol, client_order_id=client_order_id, order_id=order_id)
        return (await self._call("hidden_cancel_order", ref, api.OrderReply)).order

    async def set_funding(self, symbol: str, rate: Decimal | None, predicted_rate: Decimal | None = None) -> FundingRate:
        """Tests only (`test_hooks`): pin `symbol`'s funding rate from now on (and its predicted
        rate, else the rate itself), or with `rate` None let the seeded walk move it again.
        Journaled like every input, so it survives a restart; a FundingRate is published at once."""
        body = api.SetFundingRequest(symbol=symbol, rate=rate, predicted_rate=predicted_rate)
        return (await self._call("set_funding", body, api.FundingReply)).funding

    async def close(self) -> None:
        return None


def _rejected(order: OrderUpdate) -> OrderRejected:
    from venues import errors

    cls = getattr(errors, _REJECTED_BY_REASON.get(order.reason or "", "OrderRejected"))
    exc: OrderRejected = cls(order.message or f"rejected: {order.reason}", order.reason)
    return exc


def _error(code: int, reason: str, message: str) -> VenueError:
    if code == api.NOT_FOUND:
        return OrderNotFound(message)
    if code >= 500:  # the exchange failed, not the request: the same request may succeed later
        return Transient(message)
    known = reason if reason in get_args(RejectReason) else "upstream_rejected"
    return OrderRejected(message, known)  # type: ignore[arg-type]
