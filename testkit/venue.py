"""`ScriptedVenue`: a Venue whose answers a test dictates, call by call, method by method.

Each method pops its next answer from its own script; an answer that is an exception is
raised, a callable is called with the request, anything else is returned. A method with an
empty script falls back to `default` (a callable or a value) or fails the test loudly, so a
test says exactly which calls it expects. Every call is recorded in `calls`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from decimal import Decimal
from typing import Any

from schemas.account import Balance, OrderUpdate, Position
from schemas.market import Candle, FundingRate, Market
from testkit.grid import MARKET
from venues.protocol import OrderRequest

T0 = 1_700_000_000_000


class ScriptedVenue:
    def __init__(self, name: str = "sim", account: str = "main", markets: dict[str, Market] | None = None, now_ms: int = T0) -> None:
        self.name, self.account = name, account
        self._markets = markets if markets is not None else {MARKET.symbol: MARKET}
        self.clock = now_ms
        self.scripts: dict[str, deque[Any]] = defaultdict(deque)
        self.defaults: dict[str, Any] = {}
        self.calls: list[tuple[str, Any]] = []

    # ------------------------------------------------------------------ scripting

    def script(self, method: str, *answers: Any) -> ScriptedVenue:
        self.scripts[method].extend(answers)
        return self

    def default(self, method: str, answer: Any) -> ScriptedVenue:
        self.defaults[method] = answer
        return self

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    async def _answer(self, method: str, request: Any) -> Any:
        self.calls.append((method, request))
        if self.scripts[method]:
            answer = self.scripts[method].popleft()
        elif method in self.defaults:
            answer = self.defaults[method]
        else:
            raise AssertionError(f"ScriptedVenue: unexpected call {method}({request!r})")
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, type) and issubclass(answer, BaseException):
            raise answer(f"scripted {method}")
        if callable(answer):
            answer = answer(request)
            if isinstance(answer, BaseException):
                raise answer
        return answer

    # ------------------------------------------------------------------ the Venue protocol

    async def markets(self) -> dict[str, Market]:
        if self.scripts["markets"]:
            answer: dict[str, Market] = await self._answer("markets", None)
            return answer
        return self._markets

    async def now_ms(self, fresh: bool = False) -> int:
        if self.scripts["now_ms"] or "now_ms" in self.defaults:
            return int(await self._answer("now_ms", fresh))
        self.calls.append(("now_ms", fresh))
        return self.clock

    async def create_order(self, request: OrderRequest) -> OrderUpdate:
        return await self._answer("create_order", request)

    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        return await self._answer("cancel_order", (symbol, client_order_id, order_id))

    async def cancel_all_orders(self, symbol: str) -> list[OrderUpdate]:
        return await self._answer("cancel_all_orders", symbol)

    async def fetch_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        return await self._answer("fetch_order", (symbol, client_order_id, order_id))

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        return await self._answer("fetch_open_orders", symbol)

    async def fetch_positions(self, symbols: list[str] | None = None) -> list[Position]:
        return await self._answer("fetch_positions", symbols)

    async def fetch_balance(self) -> list[Balance]:
        return await self._answer("fetch_balance", None)

    async def fetch_ohlcv(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[Candle]:
        return await self._answer("fetch_ohlcv", (symbol, since, limit))

    async def fetch_funding_rate(self, symbol: str) -> FundingRate:
        return await self._answer("fetch_funding_rate", symbol)

    async def close(self) -> None:
        return None


def order(request: OrderRequest, status: str = "open", filled: str = "0", order_id: str = "9", ts: int = T0) -> OrderUpdate:
    """The venue's view of an order made from its request (what a scripted answer returns)."""
    from schemas import ids

    f = Decimal(filled)
    return OrderUpdate(
        id=ids.order_event_id("sim", "main", request.client_order_id, status, f),
        venue="sim",
        account="main",
        symbol=request.symbol,
        order_id=order_id,
        client_order_id=request.client_order_id,
        side=request.side,
        order_type=request.order_type,
        price=request.price,
        amount=request.amount,
        filled=f,
        remaining=request.amount - f,
        status=status,  # type: ignore[arg-type]
        post_only=request.post_only,
        reduce_only=request.reduce_only,
        ts=ts,
        ts_local=ts,
    )


class ScriptedBreakers:
    """The executor's breaker view, with states a test sets (and counts reads of)."""

    def __init__(self, state: str = "ok", scope: str = "global") -> None:
        self.state, self.scope = state, scope
        self.reads = 0
        self.asked: list[tuple[str, str, str | None]] = []
        self.script: deque[str] = deque()

    async def state_for(self, venue: str, symbol: str, account: str | None = None) -> tuple[str, str]:
        self.reads += 1
        self.asked.append((venue, symbol, account))
        if self.script:
            self.state = self.script.popleft()
        return self.state, self.scope if self.state != "ok" else ""
