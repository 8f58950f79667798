"""The order executor: commands from COMMAND become venue calls; what the venue says goes to ACCOUNT.

For a place it checks, in order: the command's age (older than its time-to-live, counted
from when COMMAND stored it and from the decision's own time, it is refused as `expired`),
the market's rules (unknown symbol, tick, lot, minimums: refused without calling the venue),
and the risk breakers (while one covering the market is open, only reduce-only orders pass).
Then it waits for the rate limiter and calls the venue, retrying transient errors with
exponential backoff and jitter, never retrying permanent ones. A duplicate client order id
means the order exists: it is fetched and reported, never placed again. When the outcome of
a call stays unknown (the venue keeps timing out), the command is not reported as failed:
it is retried later (RetryLater), because it may have succeeded.

A cancel is not refused for age (taking a named order off the book late is still taking it
off); a cancel-all is, since it acts on whatever rests when it runs.
Every event it publishes has the id the venue's own event for the same fact has, so the two
reports of one accepted order are stored once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from bus.contract import Inbound
from bus.errors import RetryLater
from executors import metrics
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.validate import check_place
from schemas import ids
from schemas.account import ZERO, OrderUpdate
from schemas.base import RejectReason
from schemas.commands import CancelAll, CancelOrder, Command, PlaceOrder
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.protocol import OrderRequest, Venue

log = logging.getLogger("executor")

T = TypeVar("T")
VERB = {PlaceOrder: "place", CancelOrder: "cancel", CancelAll: "cancel_all"}


class Executor:
    """Handler[Command] for bus.handler.HandlerRuntime."""

    def __init__(
        self,
        venue: Venue,
        breakers: BreakerView,
        config: ExecutorConfig,
        throttle: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.venue = venue
        self.breakers = breakers
        self.config = config
        self.throttle = throttle
        self.clock = clock
        self.sleep = sleep

    # ----------------------------------------------------------------- Handler protocol

    def key(self, inbound: Inbound[Command]) -> str:
        # One market's commands reach the venue in the order they were decided, so the venue
        # sees (and numbers) them the same way every time; different markets run side by side.
        cmd = inbound.event
        return f"{cmd.venue}/{cmd.account}/{cmd.symbol}"

    def exclusive(self, inbound: Inbound[Command]) -> bool:
        return isinstance(inbound.event, CancelAll)

    async def handle(self, inbound: Inbound[Command]) -> Sequence[Any]:
        cmd = inbound.event
        verb = VERB[type(cmd)]
        match cmd:
            case PlaceOrder():
                outputs, outcome = await self._place(cmd, inbound.stored_ns)
            case CancelOrder():
                outputs, outcome = await self._cancel(cmd)
            case CancelAll():
                outputs, outcome = await self._cancel_all(cmd, inbound.stored_ns)
        metrics.COMMANDS.labels(verb, outcome).inc()
        if inbound.stored_ns:
            metrics.COMMAND_TO_VENUE.labels(verb).observe(max(0.0, self.clock() - inbound.stored_ns / 1e9))
        return outputs

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        """A command that did not decode still gets a rejection, if it says which order it was."""
        metrics.FAILURES.labels("invalid", "invalid").inc()
        try:
            raw = json.loads(data)
        except ValueError:
            return []
        if not isinstance(raw, dict):
            return []
        venue, account, symbol, cid, side = (raw.get(k) for k in ("venue", "account", "symbol", "client_order_id", "side"))
        if not all(isinstance(v, str) and v for v in (venue, account, symbol, cid)) or side not in ("buy", "sell"):
            return []
        amount = _decimal(raw.get("amount"))
        price = _decimal(raw.get("price"))
        ts = raw.get("ts") if isinstance(raw.get("ts"), int) else 0
        try:
            return [
                OrderUpdate(
                    id=ids.order_event_id(venue, account, cid, "rejected", ZERO),
                    venue=venue,
                    account=account,
                    symbol=symbol,
                    client_order_id=cid,
                    side=side,
                    price=price if price is not None and price > 0 else None,
                    amount=amount if amount is not None and amount >= 0 else ZERO,
                    remaining=amount if amount is not None and amount >= 0 else ZERO,
                    status="rejected",
                    reason="invalid",
                    message=reason[:500],
                    ts=ts,
                    ts_local=int(self.clock() * 1000),
                )
            ]
        except ValueError:
            return []

    # ----------------------------------------------------------------- commands

    async def _place(self, cmd: PlaceOrder, stored_ns: int) -> tuple[list[OrderUpdate], str]:
        now_ms = self.clock() * 1000
        if stored_ns and now_ms - stored_ns / 1e6 > cmd.ttl_ms:
            age = now_ms - stored_ns / 1e6
            return await self._expired(cmd, f"reached the executor {age:.0f} ms after it was stored (time-to-live {cmd.ttl_ms} ms)")
        venue_now = await self._call("place", self.venue.now_ms)
        if venue_now - cmd.ts > cmd.ttl_ms:
            return await self._expired(cmd, f"decided {venue_now - cmd.ts} ms ago by the venue's clock (time-to-live {cmd.ttl_ms} ms)")
        markets = await self._call("place", self.venue.markets)
        problem = check_place(cmd, markets.get(cmd.symbol))
        if problem is not None:
            return [self._reject(cmd, *problem)], problem[0]
        breaker, scope = await self.breakers.state_for(cmd.venue, cmd.symbol)
        if breaker == "halted" or (breaker == "reduce_only" and not cmd.reduce_only):
            return [self._reject(cmd, "breaker_open", f"risk breaker {scope} is {breaker}")], "breaker_open"
        request = OrderRequest(
            symbol=cmd.symbol,
            client_order_id=cmd.client_order_id,
            side=cmd.side,
            order_type=cmd.order_type,
            amount=cmd.amount,
            price=cmd.price,
            post_only=cmd.post_only,
            reduce_only=cmd.reduce_only,
            use_margin=cmd.use_margin,
            time_in_force=cmd.time_in_force,
        )
        try:
            order = await self._call("place", lambda: self.venue.create_order(request), limited=True)
        except DuplicateOrder as dup:
            # The order exists (a retry, a replay, or another executor got there first).
            existing = dup.existing or await self._call(
                "place", lambda: self.venue.fetch_order(cmd.symbol, client_order_id=cmd.client_order_id)
            )
            return [existing], "duplicate"
        except OrderRejected as rej:
            return [self._reject(cmd, rej.reason, str(rej))], rej.reason
        return [order], "placed"

    async def _expired(self, cmd: PlaceOrder, why: str) -> tuple[list[OrderUpdate], str]:
        """Refuse an old command, unless an earlier attempt already placed the order."""
        try:
            existing = await self._call("place", lambda: self.venue.fetch_order(cmd.symbol, client_order_id=cmd.client_order_id))
        except OrderNotFound:
            log.warning("refusing %s: %s", cmd.client_order_id, why)
            return [self._reject(cmd, "expired", why)], "expired"
        return [existing], "duplicate"

    async def _cancel(self, cmd: CancelOrder) -> tuple[list[OrderUpdate], str]:
        try:
            order = await self._call(
                "cancel",
                lambda: self.venue.cancel_order(cmd.symbol, client_order_id=cmd.client_order_id, order_id=cmd.order_id),
                limited=True,
            )
        except OrderNotFound:
            try:  # some venues answer a cancel of an order that just ended with "not found"
                order = await self._call(
                    "cancel", lambda: self.venue.fetch_order(cmd.symbol, client_order_id=cmd.client_order_id, order_id=cmd.order_id)
                )
            except OrderNotFound:
                # It never reached the venue (its place was refused or expired): that place's
                # own outcome is what its sender hears about.
                log.info("cancel of %s: no such order at the venue", cmd.client_order_id or cmd.order_id)
                return [], "not_found"
        return [order], "canceled" if order.status == "canceled" else order.status

    async def _cancel_all(self, cmd: CancelAll, stored_ns: int) -> tuple[list[OrderUpdate], str]:
        # Unlike a cancel (which names one order), cancel-all acts on whatever rests *now*: an
        # old one would take today's orders off. It expires like a place.
        age = self.clock() * 1000 - stored_ns / 1e6
        if stored_ns and age > cmd.ttl_ms:
            log.warning("refusing cancel-all on %s: %.0f ms old (time-to-live %d ms)", cmd.symbol, age, cmd.ttl_ms)
            metrics.FAILURES.labels("cancel_all", "expired").inc()
            return [], "expired"
        orders = await self._call("cancel_all", lambda: self.venue.cancel_all_orders(cmd.symbol), limited=True)
        return orders, "done"

    # ----------------------------------------------------------------- plumbing

    async def _call(self, verb: str, fn: Callable[[], Awaitable[T]], limited: bool = False) -> T:
        """Call the venue; retry transient errors with backoff and jitter; unknown outcome -> RetryLater."""
        delay = self.config.backoff_ms / 1000
        for attempt in range(self.config.retries + 1):
            if limited:
                await self.throttle()
            try:
                return await fn()
            except Transient as exc:
                metrics.RETRIES.labels(verb, exc.reason).inc()
                if attempt == self.config.retries:
                    metrics.FAILURES.labels(verb, exc.reason).inc()
                    raise RetryLater(f"{verb}: {exc} (after {attempt + 1} attempts)") from exc
                log.info("%s: %s; retry %d in %.0f ms", verb, exc, attempt + 1, delay * 1000)
                await self.sleep(delay * (0.5 + random.random()))  # jitter: retries of many commands spread out
                delay = min(delay * 2, self.config.backoff_max_ms / 1000)
        raise AssertionError("unreachable")

    def _reject(self, cmd: PlaceOrder, reason: RejectReason, message: str) -> OrderUpdate:
        metrics.FAILURES.labels("place", reason).inc()
        return OrderUpdate(
            id=ids.order_event_id(cmd.venue, cmd.account, cmd.client_order_id, "rejected", ZERO),
            venue=cmd.venue,
            account=cmd.account,
            symbol=cmd.symbol,
            client_order_id=cmd.client_order_id,
            side=cmd.side,
            order_type=cmd.order_type,
            price=cmd.price,
            amount=cmd.amount,
            remaining=cmd.amount,
            status="rejected",
            post_only=cmd.post_only,
            reduce_only=cmd.reduce_only,
            reason=reason,
            message=message,
            ts=cmd.ts,  # the decision's time keeps replays of the strategy deterministic
            ts_local=int(self.clock() * 1000),
        )


def _decimal(value: Any) -> Decimal | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None
