"""The order executor: commands from COMMAND become venue calls; what the venue says goes to ACCOUNT.

For a place it checks, in order: whether an earlier attempt already placed it (only for a
command an earlier session may have handled), the command's age (older than its time-to-live,
counted from when COMMAND stored it and from the decision's own time by the venue's clock),
the market's rules (unknown symbol, tick, lot, minimums: refused without calling the venue),
and the risk breakers (while one covering the market is open, only reduce-only orders pass).
Then it waits for the rate limiter and calls the venue, retrying transient errors with
exponential backoff and jitter (reading the breakers again and looking the order up by its
client id before each resend of a create: a venue may free a filled order's id), never retrying
permanent ones. A duplicate client order id means the order exists: it is fetched and
reported, never placed again.

An outcome it did not observe is unknown, never a refusal. Every create carries a deadline
(the decision's time plus its time-to-live, on the venue's clock) after which the venue will
not accept it; so "not found" is final only once the venue's clock, asked, is past that
deadline. Until then the command is retried later (RetryLater); if it cannot be settled within
`unknown_after_ms` of being stored, it is published as `unknown` with the evidence, and the
reconciler settles it.

A cancel is not refused for age (taking a named order off the book late is still taking it
off); a cancel-all is, since it acts on whatever rests when it runs. Every event it publishes
has the id the venue's own event for the same fact has, so the two reports of one accepted
order are stored once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bus.contract import Inbound
from bus.errors import RetryLater
from executors import metrics
from executors.answers import invalid_command, order_event
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.validate import check_place, order_request
from schemas.account import OrderUpdate
from schemas.commands import CancelAll, CancelOrder, Command, PlaceOrder
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.protocol import Venue

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
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.venue = venue
        self.breakers = breakers
        self.config = config
        self.throttle = throttle
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter  # in [0, 1): retries of many commands spread out

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
                outputs, outcome = await Placement(self, cmd, inbound.stored_ns, inbound.delivered > 1).run()
            case CancelOrder():
                outputs, outcome = await self._cancel(cmd)
            case CancelAll():
                outputs, outcome = await self._cancel_all(cmd, inbound.stored_ns)
        metrics.COMMANDS.labels(verb, outcome).inc()
        if inbound.stored_ns:
            metrics.COMMAND_TO_VENUE.labels(verb).observe(max(0.0, self.clock() - inbound.stored_ns / 1e9))
        return outputs

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        """A command that was not admitted still gets a rejection, if it says which order it was:
        on the subject's own venue, account and symbol (the subject is the authority)."""
        metrics.FAILURES.labels("invalid", "invalid").inc()
        answer = invalid_command(subject, data, reason, int(self.clock() * 1000))
        return [] if answer is None else [answer]

    # ----------------------------------------------------------------- cancels

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
                log.info("cancel of client_id=%s: no such order at the venue", cmd.client_order_id or cmd.order_id)  # pragma: no mutate
                return [], "not_found"
        return [order], order.status  # canceled, or how it ended before the cancel

    async def _cancel_all(self, cmd: CancelAll, stored_ns: int) -> tuple[list[OrderUpdate], str]:
        # Unlike a cancel (which names one order), cancel-all acts on whatever rests *now*: an
        # old one would take today's orders off. It expires like a place.
        age = self.clock() * 1000 - stored_ns / 1e6
        if stored_ns and age > cmd.ttl_ms:
            log.warning("refusing cancel-all symbol=%s: %.0f ms old (time-to-live %d ms)", cmd.symbol, age, cmd.ttl_ms)  # pragma: no mutate
            metrics.FAILURES.labels("cancel_all", "expired").inc()
            return [], "expired"
        orders = await self._call("cancel_all", lambda: self.venue.cancel_all_orders(cmd.symbol), limited=True)
        return orders, "done"

    # ----------------------------------------------------------------- plumbing

    async def _call(
        self,
        verb: str,
        fn: Callable[[], Awaitable[T]],
        limited: bool = False,
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Call the venue; retry transient errors with backoff and jitter; unknown outcome -> RetryLater."""
        delay = self.config.backoff_ms / 1000
        attempt = 0
        while True:
            if attempt and before_retry is not None:
                await before_retry()
            if limited:
                await self.throttle()
            try:
                return await fn()
            except Transient as exc:
                metrics.RETRIES.labels(verb, exc.reason).inc()
                if attempt == self.config.retries:
                    metrics.FAILURES.labels(verb, exc.reason).inc()
                    raise RetryLater(f"{verb}: {exc} (after {attempt + 1} attempts)") from exc
                log.info("%s: %s; retry %d in %.0f ms", verb, exc, attempt + 1, delay * 1000)  # pragma: no mutate
                await self.sleep(delay * (0.5 + self.jitter()))
                delay = min(delay * 2, self.config.backoff_max_ms / 1000)
                attempt += 1


class _Landed(Exception):
    """An earlier attempt of this create turned out to have placed the order."""

    def __init__(self, order: OrderUpdate) -> None:
        self.order = order


class Placement:
    """One place command, from its checks to an outcome the venue confirmed (or `unknown`)."""

    def __init__(self, executor: Executor, cmd: PlaceOrder, stored_ns: int, maybe_attempted: bool) -> None:
        self.x = executor
        self.cmd = cmd
        self.stored_ns = stored_ns
        self.maybe_attempted = maybe_attempted  # an earlier session may have sent it to the venue
        self.deadline = cmd.ts + cmd.ttl_ms  # no attempt of this command may land after it (venue clock)

    async def run(self) -> tuple[list[OrderUpdate], str]:
        try:
            return await self._run()
        except RetryLater as exc:
            return self._unsettled(str(exc))

    async def _run(self) -> tuple[list[OrderUpdate], str]:
        cmd, x = self.cmd, self.x
        if self.maybe_attempted:
            existing = await self._find()
            if existing is not None:
                return [existing], "duplicate"
        late = await self._lateness()
        if late:
            return await self._expired(late)
        markets = await x._call("place", x.venue.markets)
        problem = check_place(cmd, markets.get(cmd.symbol))
        if problem is not None:
            return [self._reject(*problem)], problem[0]
        refusal = await self._breaker_refusal()
        if refusal:
            return [self._reject("breaker_open", refusal)], "breaker_open"
        request = order_request(cmd, self.deadline)
        try:
            order = await x._call("place", lambda: x.venue.create_order(request), limited=True, before_retry=self._still_allowed)
        except _Landed as landed:  # an attempt whose answer was lost had placed it
            return [landed.order], "duplicate"
        except DuplicateOrder as dup:
            # The order exists (a retry, a replay, or another executor got there first).
            existing = dup.existing or await self._find()
            if existing is None:
                raise RetryLater(f"{cmd.client_order_id}: the venue says it exists but does not find it") from dup
            return [existing], "duplicate"
        except OrderRejected as rej:  # final: had an earlier attempt landed, the id would be taken
            return [self._reject(rej.reason, str(rej))], rej.reason
        return [order], "placed"

    async def _still_allowed(self) -> None:
        """Before a retry: if a breaker opened meanwhile, stop; the earlier attempt's outcome is
        unknown, so the redelivered command settles it with the venue first. Then ask the venue
        whether the earlier attempt landed: a venue that holds a client id only while its order
        rests (Binance) would take a resend of a filled order as a new one."""
        refusal = await self._breaker_refusal()
        if refusal:
            raise RetryLater(f"{self.cmd.client_order_id}: {refusal} before a retry of a create whose outcome is unknown")
        existing = await self._find()
        if existing is not None:
            raise _Landed(existing)

    async def _breaker_refusal(self) -> str | None:
        cmd = self.cmd
        breaker, scope = await self.x.breakers.state_for(cmd.venue, cmd.symbol, cmd.account)
        if breaker == "halted" or (breaker == "reduce_only" and not cmd.reduce_only):
            return f"risk breaker {scope} is {breaker}"
        return None

    async def _lateness(self) -> str | None:
        """Why the command is too old to execute (None if it is not)."""
        cmd, x = self.cmd, self.x
        now_ms = x.clock() * 1000
        if self.stored_ns and now_ms - self.stored_ns / 1e6 > cmd.ttl_ms:
            return f"reached the executor {now_ms - self.stored_ns / 1e6:.0f} ms after it was stored (time-to-live {cmd.ttl_ms} ms)"
        venue_now = await x._call("place", x.venue.now_ms)
        if venue_now - cmd.ts > cmd.ttl_ms:
            return f"decided {venue_now - cmd.ts} ms ago by the venue's clock (time-to-live {cmd.ttl_ms} ms)"
        return None

    async def _find(self) -> OrderUpdate | None:
        cmd, x = self.cmd, self.x
        try:
            return await x._call("place", lambda: x.venue.fetch_order(cmd.symbol, client_order_id=cmd.client_order_id))
        except OrderNotFound:
            return None

    async def _expired(self, why: str) -> tuple[list[OrderUpdate], str]:
        """Refuse an old command, once the venue confirms no attempt of it placed the order."""
        existing = await self._find()
        if existing is not None:
            return [existing], "duplicate"
        x = self.x
        venue_now = await x._call("place", lambda: x.venue.now_ms(fresh=True))
        if venue_now <= self.deadline + x.config.deadline_margin_ms:
            raise RetryLater(
                f"{self.cmd.client_order_id} is not at the venue yet, but the venue's clock {venue_now} "
                f"has not passed its deadline {self.deadline} (+{x.config.deadline_margin_ms} ms): an attempt may still land"
            )
        log.warning("refusing client_id=%s: %s", self.cmd.client_order_id, why)  # pragma: no mutate
        return [self._reject("expired", why)], "expired"

    def _unsettled(self, evidence: str) -> tuple[list[OrderUpdate], str]:
        """RetryLater, unless settling has taken too long: then `unknown` (if it may exist) or,
        for a command that certainly never reached the venue, a refusal it can retry. (This
        session cannot have sent it: a create goes out only within the time-to-live, and the
        window ends well after it; so only an earlier session may have.)"""
        cmd, x = self.cmd, self.x
        waited_ms = x.clock() * 1000 - self.stored_ns / 1e6 if self.stored_ns else 0  # 0: not stored (a test)
        if waited_ms <= cmd.ttl_ms + x.config.unknown_after_ms:
            raise RetryLater(evidence)
        if not self.maybe_attempted:
            return [self._reject("venue_error", f"not sent in {waited_ms:.0f} ms: {evidence}")], "venue_error"
        log.error("client_id=%s: outcome unknown after %.0f ms: %s", cmd.client_order_id, waited_ms, evidence)  # pragma: no mutate
        metrics.FAILURES.labels("place", "unknown").inc()
        event = order_event(cmd, "unknown", "venue_error", f"outcome unknown after {waited_ms:.0f} ms: {evidence}", x.clock())
        return [event], "unknown"

    def _reject(self, reason: Any, message: str) -> OrderUpdate:
        metrics.FAILURES.labels("place", reason).inc()
        return order_event(self.cmd, "rejected", reason, message, self.x.clock())
