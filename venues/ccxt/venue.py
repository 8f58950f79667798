"""`CcxtVenue`: the Venue protocol over one ccxt exchange (one per venue and account).

Every call goes through `_call`, which maps what ccxt raises once (`from_ccxt`) and counts it. A
venue that asked us to slow down (418/429) is not asked again before the wait it named has
passed: the wait is shared by every call of the process, since the venue counts per key and IP.

A create is sent with our client id in the venue's own field and, where the venue has one, a
window after which it must refuse it (Binance `recvWindow`, OKX `expTime`, Bybit `recv_window`):
that is what lets the executor call a "not found" final. A duplicate client id means the order
exists: it is fetched and raised as `DuplicateOrder` with the order, never placed again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from schemas.account import Balance, OrderUpdate, Position
from schemas.market import Candle, FundingRate, Market
from venues.ccxt import metrics, parse
from venues.ccxt.errors import from_ccxt
from venues.ccxt.ids import rule
from venues.errors import DuplicateOrder, MarginUnavailable, OrderNotFound, OrderRejected, RateLimited, Transient, VenueError
from venues.protocol import OrderRequest

log = logging.getLogger("venue.ccxt")
T = TypeVar("T")
P = ParamSpec("P")

# How a venue is told that an order must not be accepted after a moment. Binance and Bybit take a
# window after the request's own timestamp (capped by the venue); OKX an absolute expiry time.
_WINDOW_PARAM = {"binanceusdm": "recvWindow", "binance": "recvWindow", "bybit": "recv_window"}
_WINDOW_MAX_MS = {"binanceusdm": 60_000, "binance": 60_000, "bybit": 60_000}
_EXPIRY_PARAM = {"okx": "expTime"}
# The parameter that names an order by client id in cancel and fetch (ccxt passes it through).
_REF_PARAM = {
    "binanceusdm": "origClientOrderId",
    "binance": "origClientOrderId",
    "okx": "clOrdId",
    "bybit": "orderLinkId",
    "bitget": "clientOid",
}
# Spot margin: what makes a create borrow what it lacks (and a reducing one repay).
_MARGIN_PARAMS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "binance": lambda reduce: {"marginMode": "cross", "sideEffectType": "AUTO_REPAY" if reduce else "MARGIN_BUY"},
    "okx": lambda reduce: {"marginMode": "cross"},
    "bybit": lambda reduce: {"isLeverage": 1},
    "gate": lambda reduce: {"marginMode": "cross", "auto_borrow": not reduce, "auto_repay": reduce},
    "bitget": lambda reduce: {"marginMode": "cross", "loanType": "autoRepay" if reduce else "autoLoan"},
}
# Venues the adapter must not trade on yet, and why (their data and the publisher still work).
NO_TRADING = {
    "gate": (
        "trading is refused: Gate does not refuse a reused client id (`text`) and cannot find a finished "
        "order by it, so an order whose answer was lost could be placed twice"
    ),
}
# What ccxt needs to fetch one order on some venues (Bybit answers only for its last 500 orders,
# and ccxt refuses to ask without being told we know).
FETCH_ORDER_PARAMS: dict[str, dict[str, Any]] = {"bybit": {"acknowledged": True}}


def fetch_order_params(exchange_id: str) -> dict[str, Any]:
    return dict(FETCH_ORDER_PARAMS.get(exchange_id, {}))  # a copy: ccxt may change what it is given


# What ccxt asks for in one request at most (its binance caps every market at 1,000, though the
# futures API takes 1,500); the loop below does not rely on it: a short page is not the end.
OHLCV_PAGE = {"binanceusdm": 1000, "binance": 1000, "okx": 300, "bybit": 1000, "gate": 1000, "bitget": 200}


def readable(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """An answer we cannot read (a field missing or not a number, a side we do not know) is an
    unknown outcome, like a lost one: never a crash of the caller, never a refusal."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except VenueError:
            raise
        except (ValueError, KeyError, TypeError, ArithmeticError, AttributeError, IndexError) as exc:
            raise Transient(f"{method.__name__}: the venue's answer cannot be read ({type(exc).__name__}: {exc})") from exc

    return wrapper


class CcxtVenue:
    def __init__(
        self,
        exchange: Any,
        name: str,
        account: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.exchange = exchange
        self.name = name
        self.account = account
        self.exchange_id: str = exchange.id
        self.ids = rule(self.exchange_id)
        self.client_id_max = self.ids.max_length  # the grid checks its ids fit at start
        self.refused: str | None = NO_TRADING.get(self.exchange_id)  # why creates are refused here
        self.clock = clock
        self.sleep = sleep
        self._markets: dict[str, Market] | None = None
        self._offset_ms: int | None = None  # venue clock - local clock, from the last fetch_time
        self._quiet_until = 0.0  # local time before which the venue asked not to be called
        self._intervals: dict[str, str] = {}
        # Binance refuses an open-orders query without a symbol unless told this is wanted.
        exchange.options["warnOnFetchOpenOrdersWithoutSymbol"] = False

    # ----------------------------------------------------------------- plumbing

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _venue_now_ms(self) -> int:
        """The venue's clock as last measured (local clock plus the offset `now_ms` saw)."""
        return self._now_ms() + (self._offset_ms or 0)

    async def _call(self, method: str, fn: Callable[[], Awaitable[T]], deadline_ms: int | None = None) -> T:
        """`deadline_ms` (venue clock): not sent at or past it, checked after any wait the venue
        asked for, so a create never goes out late."""
        wait = self._quiet_until - self.clock()
        if wait > 0:
            metrics.RATE_LIMIT_WAIT.labels(self.name).inc(wait)
            await self.sleep(wait)
        if deadline_ms is not None and self._venue_now_ms() >= deadline_ms:
            # Never sent late (Gate and Bitget would still accept it). Not a refusal: an earlier
            # attempt's outcome may be unknown, and the executor settles that by a fetch.
            raise Transient(f"{method}: its deadline passed {self._venue_now_ms() - deadline_ms} ms ago; not sent")
        started = time.perf_counter()
        try:
            result = await fn()
        except VenueError:
            raise
        except Exception as exc:  # ccxt's classes and asyncio's timeout: mapped in one place
            # The answer's headers carry a rate limit's Retry-After (ccxt keeps the last ones).
            headers = getattr(self.exchange, "last_response_headers", None)
            error = from_ccxt(exc, self.exchange_id, headers=headers, now_ms=self._now_ms())
            metrics.CALLS.labels(self.name, method, error.reason).inc()
            if isinstance(error, RateLimited):
                metrics.RATE_LIMITED.labels(self.name).inc()
                asked = error.retry_after if error.retry_after is not None else 1.0
                self._quiet_until = max(self._quiet_until, self.clock() + asked)
            raise error from exc
        finally:
            metrics.CALL_SECONDS.labels(self.name, method).observe(time.perf_counter() - started)
        metrics.CALLS.labels(self.name, method, "ok").inc()
        return result

    def _client_id(self, text: str) -> str | None:
        try:
            return self.ids.from_venue(text)
        except ValueError:
            return None

    def _order(self, raw: Any) -> OrderUpdate:
        return parse.order(self.name, self.account, raw, self._now_ms(), self._client_id)

    def _ref(self, client_order_id: str | None, order_id: str | None) -> tuple[str | None, dict[str, Any]]:
        """(id, params) naming one order for cancel and fetch: the venue's id if known, else ours."""
        if order_id is not None or client_order_id is None:
            return order_id, {}
        text = self.ids.to_venue(client_order_id)
        if self.exchange_id == "gate":  # Gate takes its `text` in place of the order id
            return (text if text.startswith("t-") else f"t-{text}"), {}
        return None, {_REF_PARAM[self.exchange_id]: text}

    # ----------------------------------------------------------------- Venue protocol

    @readable
    async def markets(self) -> dict[str, Market]:
        if self._markets is None:
            await self._call("load_markets", self.exchange.load_markets)
            self._markets = parse.markets(self.exchange)
        return self._markets

    def create_params(self, request: OrderRequest) -> dict[str, Any]:
        """What a create sends besides symbol, type, side, amount and price (ccxt's unified names
        where they exist; ccxt turns them into the venue's own)."""
        params: dict[str, Any] = {"clientOrderId": self.ids.to_venue(request.client_order_id)}
        if request.post_only:
            params["postOnly"] = True
        if request.reduce_only and not request.use_margin:
            params["reduceOnly"] = True
        if request.time_in_force is not None and request.time_in_force != "PO":
            params["timeInForce"] = request.time_in_force
        elif request.time_in_force == "PO":
            params["postOnly"] = True
        if request.use_margin:
            margin = _MARGIN_PARAMS.get(self.exchange_id)
            if margin is None:
                raise MarginUnavailable(f"{self.name} has no spot margin through this adapter")
            params.update(margin(request.reduce_only))
        if request.deadline_ms is not None:
            left = request.deadline_ms - self._now_ms()
            if self.exchange_id in _WINDOW_PARAM:
                params[_WINDOW_PARAM[self.exchange_id]] = max(1, min(left, _WINDOW_MAX_MS[self.exchange_id]))
            elif self.exchange_id in _EXPIRY_PARAM:
                params[_EXPIRY_PARAM[self.exchange_id]] = str(request.deadline_ms)
        return params

    @readable
    async def create_order(self, request: OrderRequest) -> OrderUpdate:
        if self.refused is not None:
            raise OrderRejected(f"{self.name}: {self.refused}", "upstream_rejected")
        try:
            self.create_params(request)
        except ValueError as exc:  # an id this venue cannot hold (Gate: 26 characters)
            raise OrderRejected(str(exc), "invalid") from None
        price = float(request.price) if request.price is not None else None

        async def send() -> Any:
            # The acceptance window is measured when the request leaves, after any wait.
            params = self.create_params(request)
            return await self.exchange.create_order(request.symbol, request.order_type, request.side, float(request.amount), price, params)

        try:
            raw = await self._call("create_order", send, deadline_ms=request.deadline_ms)
        except DuplicateOrder as dup:
            try:
                existing: OrderUpdate | None = await self.fetch_order(request.symbol, client_order_id=request.client_order_id)
            except VenueError:  # not visible yet: the order exists all the same; the caller finds it
                existing = None
            raise DuplicateOrder(str(dup), existing=existing) from dup
        if raw.get("status") and raw.get("amount") is not None:
            return self._order(raw)
        # OKX, Bybit and Gate's spot answer a create with ids only: what the order did (an IOC
        # may already be done) is asked, never assumed.
        try:
            return await self.fetch_order(request.symbol, client_order_id=request.client_order_id, order_id=raw.get("id"))
        except OrderNotFound:
            # Accepted but not visible yet: what it did is unknown (an IOC may be done), so it is
            # not reported as resting; the executor settles it by a fetch.
            raise Transient(f"{request.client_order_id}: accepted as {raw.get('id')}, not visible yet") from None

    @readable
    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        ref, params = self._ref(client_order_id, order_id)
        raw = await self._call("cancel_order", lambda: self.exchange.cancel_order(ref, symbol, params))
        if not raw.get("status") or raw.get("amount") is None:
            # Binance futures and others answer a cancel with the order; OKX and Bybit with its id
            # only: fetch it, so the report carries what was filled before it ended.
            return await self.fetch_order(symbol, client_order_id=client_order_id, order_id=order_id or raw.get("id"))
        return self._order(raw)

    @readable
    async def cancel_all_orders(self, symbol: str) -> list[OrderUpdate]:
        resting = await self.fetch_open_orders(symbol)
        if not resting:
            return []
        if self.exchange.has.get("cancelAllOrders"):
            await self._call("cancel_all_orders", lambda: self.exchange.cancel_all_orders(symbol))
        else:  # OKX: no cancel-all for one market; cancel what rests, by id, 20 a request (its batch limit)
            order_ids = [o.order_id for o in resting if o.order_id]
            for i in range(0, len(order_ids), 20):
                batch = order_ids[i : i + 20]
                await self._call("cancel_orders", functools.partial(self.exchange.cancel_orders, batch, symbol))
        out = []
        for o in resting:
            try:
                out.append(await self.fetch_order(symbol, client_order_id=o.client_order_id, order_id=o.order_id))
            except OrderNotFound:
                log.warning("order %s was cancelled but cannot be fetched", o.client_order_id)  # pragma: no mutate
        return out

    @readable
    async def fetch_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        ref, params = self._ref(client_order_id, order_id)
        params.update(fetch_order_params(self.exchange_id))
        return self._order(await self._call("fetch_order", lambda: self.exchange.fetch_order(ref, symbol, params)))

    @readable
    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        raw = await self._call("fetch_open_orders", lambda: self.exchange.fetch_open_orders(symbol))
        return [self._order(o) for o in raw]

    async def fetch_my_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent executions, as ccxt gives them (the caller names each fill's client id)."""
        result: list[dict[str, Any]] = await self._call("fetch_my_trades", lambda: self.exchange.fetch_my_trades(symbol, since, limit))
        return result

    @readable
    async def fetch_positions(self, symbols: list[str] | None = None) -> list[Position]:
        if not self.exchange.has.get("fetchPositions") or self.exchange_id == "binance":
            return []  # spot venues hold balances, not positions
        raw = await self._call("fetch_positions", lambda: self.exchange.fetch_positions(symbols))
        now = self._now_ms()
        return [parse.position(self.name, self.account, p, now) for p in raw if symbols is None or p.get("symbol") in symbols]

    @readable
    async def fetch_balance(self) -> list[Balance]:
        raw = await self._call("fetch_balance", self.exchange.fetch_balance)
        return parse.balances(self.name, self.account, raw, self._now_ms())

    @readable
    async def fetch_ohlcv(self, symbol: str, since: int | None = None, limit: int | None = None, *, interval: str = "1m") -> list[Candle]:
        """Candles from `since`, paged by the venue's largest page until `limit` or the present."""
        page = OHLCV_PAGE.get(self.exchange_id, 500)
        want = limit or page
        step = parse.INTERVAL_MS.get(interval, 60_000)
        now = await self.now_ms()
        rows: dict[int, list[Any]] = {}
        cursor = since
        while len(rows) < want:
            n = min(page, want - len(rows))
            got: list[list[Any]] = await self._call(
                "fetch_ohlcv", functools.partial(self.exchange.fetch_ohlcv, symbol, interval, cursor, n)
            )
            fresh = [r for r in got if int(r[0]) not in rows]
            for r in fresh:
                rows[int(r[0])] = r
            if since is None or not fresh or int(got[-1][0]) + step > now:
                break  # the latest page was asked for, or the venue has no more, or we reached now
            cursor = int(got[-1][0]) + step
        ordered = [rows[t] for t in sorted(rows)]
        ordered = ordered[-want:] if since is None else ordered[:want]
        local = self._now_ms()
        return [parse.candle(self.name, symbol, r, interval, now, local) for r in ordered]

    async def funding_interval(self, symbol: str) -> str | None:
        """The venue's real funding interval for a market (ccxt's, where it can tell)."""
        if symbol not in self._intervals and self.exchange.has.get("fetchFundingInterval"):
            try:
                got = await self._call("fetch_funding_interval", lambda: self.exchange.fetch_funding_interval(symbol))
                if got.get("interval"):
                    self._intervals[symbol] = got["interval"]
            except VenueError as exc:
                log.info("funding interval of %s unknown (%s); the rate's own is used", symbol, exc)  # pragma: no mutate
        return self._intervals.get(symbol)

    @readable
    async def fetch_funding_rate(self, symbol: str) -> FundingRate:
        raw = await self._call("fetch_funding_rate", lambda: self.exchange.fetch_funding_rate(symbol))
        interval = None if raw.get("interval") else await self.funding_interval(symbol)
        return parse.funding_rate(self.name, raw, self._now_ms(), interval)

    @readable
    async def fetch_funding_history(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[FundingRate]:
        raw = await self._call("fetch_funding_rate_history", lambda: self.exchange.fetch_funding_rate_history(symbol, since, limit))
        interval = await self.funding_interval(symbol)
        now = self._now_ms()
        return [parse.funding_rate(self.name, {**r, "nextFundingTimestamp": r.get("timestamp")}, now, interval) for r in raw]

    async def borrow(self, asset: str, amount: Decimal) -> None:
        await self._call("borrow", lambda: self.exchange.borrow_cross_margin(asset, float(amount)))

    async def repay(self, asset: str, amount: Decimal) -> None:
        await self._call("repay", lambda: self.exchange.repay_cross_margin(asset, float(amount)))

    async def now_ms(self, fresh: bool = False) -> int:
        """The venue's clock: asked when `fresh` (never ahead of it: the ask's own start is added,
        not its end), otherwise the last offset applied to the local clock."""
        if fresh or self._offset_ms is None:
            sent = self._now_ms()
            try:
                said = await self._call("fetch_time", self.exchange.fetch_time)
                if said is None:
                    raise Transient(f"{self.name} did not say its time")
                venue = int(said)
            except Transient:
                if fresh or self._offset_ms is None:
                    raise
            else:
                self._offset_ms = venue - sent
                if fresh:
                    return venue
        return self._now_ms() + (self._offset_ms or 0)

    async def close(self) -> None:
        await self.exchange.close()
