"""The reconciler's passes: read the venue, wait for our record, compare, confirm, act, report.

A pass reads the venue's clock, open orders and positions, then waits until our record (the
ACCOUNT stream folded by `RecordCore`) reflects everything ACCOUNT had stored by then, so an
event the venue published before it answered is never mistaken for a lost one. The pure
comparison (`compare.py`) leaves aside whatever was active in the last `grace_ms`; every other
difference is confirmed by a direct fetch (`fetch_order`, or the market's position) and checked
against the record once more before it is reported or acted on.

Policy `report` publishes findings. Policy `fix` also: cancels a ghost order whose client id
carries one of our prefixes (never another: it may be a person's or another system's), publishes
the venue's real state of a missing order, of an order with a fill our record lacks, and of an
`unknown` outcome the venue can answer (an `OrderUpdate` on the order's usual subject, with the
id the venue's own event for that fact has, so a repeat or the late original is stored once),
and raises a `position_drift` risk alert. A position is never traded here.

Passes run every `interval_ms`, and at once after a gap marker or an `unknown` outcome. A pass
that fails (the venue or the bus unreachable, the record behind) is retried after a backoff
that doubles up to `backoff_max_ms`, logged and counted, and raised as a risk alert once it has
failed three times in a row; triggers wait for the backoff too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from nats.errors import Error as NatsError

from bus.contract import OutputRefused, Rules, address
from bus.errors import BusError
from bus.publisher import Publisher
from monitors.reconciler import metrics
from monitors.reconciler.compare import Comparison, Difference, Settings, compare, drifted
from monitors.reconciler.config import ReconcilerConfig
from monitors.reconciler.record import ENDED, OrderRec, Record, signed
from schemas import ids, subjects
from schemas.account import ZERO, OrderUpdate
from schemas.ops import ReconciliationFinding, RiskAlert
from venues.errors import OrderNotFound, OrderRejected, RateLimited, Transient, VenueError
from venues.protocol import Venue

log = logging.getLogger("reconciler")

T = TypeVar("T")
ALERT_AFTER_FAILURES = 3


class RecordBehind(BusError):
    """Our record did not catch up with ACCOUNT in time: comparing now would invent findings."""


def failure_reason(exc: BaseException) -> str:
    """The one mapping from an error to a bounded reason category (metrics, status, logs)."""
    match exc:
        case RateLimited():
            return "rate_limited"
        case Transient():
            return "venue_unavailable"
        case OrderNotFound():
            return "not_found"
        case OrderRejected():
            return "venue_refused"
        case VenueError():
            return "venue_error"
        case RecordBehind():
            return "record_behind"
        case BusError() | NatsError():
            return "bus"
        case TimeoutError():
            return "timeout"
    return "bug"


EXPECTED = (VenueError, BusError, NatsError, TimeoutError)


@dataclass
class Outcome:
    """What a pass concluded (kept for /status and the tests)."""

    trigger: str
    findings: list[ReconciliationFinding] = field(default_factory=list)
    deferred: int = 0
    in_sync: bool = False
    published: list[Any] = field(default_factory=list)
    error: str = ""


class Reconciler:
    def __init__(
        self,
        venue: Venue,
        config: ReconcilerConfig,
        publisher: Publisher,
        record: Callable[[], Record],
        caught_up: Callable[[], Awaitable[bool]],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.venue = venue
        self.config = config
        self.publisher = publisher
        self.record = record  # our record as folded so far (the runtime's state)
        self.caught_up = caught_up  # True once the record reflects everything ACCOUNT stored until now
        self.clock = clock
        self.sleep = sleep  # between passes and backoffs (tests record it)
        self.poll = poll  # while waiting for the record
        self.settings = Settings(config.grace_ms, config.position_tolerance, config.unknown_after_ms)
        self.rules = Rules(
            None,
            outputs=(
                subjects.acct(config.venue, config.account, "*", "order"),
                subjects.ops("reconciler", config.name, "finding"),
                subjects.ops("reconciler", config.name, "alert"),
            ),
        )
        self.checks = 0
        self.failures = 0  # in a row
        self.last: Outcome | None = None
        self.last_error = ""
        self.delays: list[float] = []  # seconds waited before each pass (status; tests)
        self._wake = asyncio.Event()
        self._trigger = ""
        self._reported: dict[tuple[str, str], tuple[Any, int]] = {}  # (kind, key) -> (fingerprint, when)
        self._in_sync_at: int | None = None  # when the last in_sync summary went out (None: not in sync)

    # ----------------------------------------------------------------- the loop

    def trigger(self, why: str) -> None:
        """Check at once (after a gap marker or an `unknown` outcome), unless backing off."""
        self._trigger = self._trigger or why
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        why = "start"
        while not stop.is_set():
            await self.check_once(why)
            if self.failures:
                delay = min(self.config.backoff_ms * 2 ** (self.failures - 1), self.config.backoff_max_ms) / 1000
            else:
                delay = self.config.interval_ms / 1000
            why = await self._wait(delay, stop, wake=not self.failures)

    async def _wait(self, delay: float, stop: asyncio.Event, wake: bool) -> str:
        """Sleep `delay`; a trigger cuts it short unless the last pass failed (backing off)."""
        self.delays.append(delay)
        waits = {asyncio.ensure_future(self.sleep(delay)), asyncio.ensure_future(stop.wait())}
        woken = asyncio.ensure_future(self._wake.wait())
        if wake:
            waits.add(woken)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (*waits, woken):
                w.cancel()
        if self._wake.is_set():
            why, self._trigger = self._trigger or "trigger", ""
            self._wake.clear()
            return why
        return "interval"

    async def check_once(self, trigger: str) -> Outcome:
        """One pass; a failure is counted and logged, never raised (the loop backs off)."""
        venue = self.config.venue
        metrics.CHECKS.labels(venue, _bounded_trigger(trigger)).inc()
        self.checks += 1
        started = time.perf_counter()
        try:
            outcome = await self.check(trigger)
        except EXPECTED as exc:
            return await self._failed(trigger, exc)
        except Exception as exc:  # noqa: BLE001 - a bug in one pass must not end the reconciler
            log.exception("reconciliation pass failed")
            return await self._failed(trigger, exc)
        finally:
            metrics.CHECK_SECONDS.labels(venue).observe(time.perf_counter() - started)
        if self.failures:
            log.info("reconciliation works again after %d failed passes", self.failures)  # pragma: no mutate
        self.failures = 0
        self.last_error = ""
        metrics.CONSECUTIVE_FAILURES.labels(venue).set(0)
        self.last = outcome
        return outcome

    async def _failed(self, trigger: str, exc: BaseException) -> Outcome:
        reason = failure_reason(exc)
        self.failures += 1
        self.last_error = f"{reason}: {exc}"
        metrics.FAILURES.labels(self.config.venue, reason).inc()
        metrics.CONSECUTIVE_FAILURES.labels(self.config.venue).set(self.failures)
        backoff = min(self.config.backoff_ms * 2 ** (self.failures - 1), self.config.backoff_max_ms)
        log.warning(  # pragma: no mutate
            "reconciliation pass failed (%s), %d in a row; next attempt in %.1fs", self.last_error, self.failures, backoff / 1000
        )
        if self.failures == ALERT_AFTER_FAILURES:
            await self._alert_failing()
        self.last = Outcome(trigger, error=self.last_error)
        self._in_sync_at = None  # after an outage, say "in sync" again once it is
        return self.last

    async def _alert_failing(self) -> None:
        now = self._now_ms()
        alert = RiskAlert(
            id=f"alert:reconciler:{self.config.name}:failing:{now}",
            component="reconciler",
            instance=self.config.name,
            severity="warning",
            kind="reconciler_failing",
            message=f"reconciliation of {self.config.venue}/{self.config.account} failed {self.failures} times in a row: "
            f"{self.last_error}; backing off",
            venue=self.config.venue,
            value=Decimal(self.failures),
            ts=now,
        )
        try:
            await self._publish([alert])
        except EXPECTED as exc:  # the bus may be what is failing
            log.warning("could not publish the reconciler-failing alert (%s)", failure_reason(exc))  # pragma: no mutate

    # ----------------------------------------------------------------- one pass

    async def check(self, trigger: str = "manual") -> Outcome:
        """Compare, confirm, act and report once; raises what it could not get past."""
        venue_now = await self._call("now_ms", lambda: self.venue.now_ms(fresh=True))
        orders = await self._call("fetch_open_orders", lambda: self.venue.fetch_open_orders())
        positions = await self._call("fetch_positions", lambda: self.venue.fetch_positions())
        await self._record_caught_up()
        comparison = compare(self.record(), orders, positions, self._now_ms(), venue_now, self.settings)
        for d in comparison.deferred:
            metrics.DEFERRED.labels(self.config.venue, d.kind).inc()
        confirmed: list[tuple[Difference, Any]] = []
        for diff in comparison.differences:
            evidence = await self._confirm(diff)
            if evidence is not None:
                confirmed.append((diff, evidence))
        if confirmed:
            await self._record_caught_up()  # what the venue published before it answered is ours too
        outcome = Outcome(trigger, deferred=len(comparison.deferred))
        keys: set[tuple[str, str]] = {(d.kind, d.key) for d in comparison.deferred}
        for diff, fetched in confirmed:
            finding = await self._judge(diff, fetched, outcome)
            if finding is not None:
                keys.add((diff.kind, diff.key))
                self._report(finding, outcome)
        self._reported = {k: v for k, v in self._reported.items() if k in keys}
        self._summary(comparison, outcome, len(orders), len(positions))
        await self._publish(outcome.published)
        for f in outcome.findings:
            metrics.FINDINGS.labels(self.config.venue, f.kind).inc()
        return outcome

    async def _confirm(self, diff: Difference) -> Any:
        """The venue's answer to a direct question about the difference, or None if it is gone."""
        if diff.kind == "position_drift":
            positions = await self._call("fetch_positions", lambda: self.venue.fetch_positions([diff.symbol]))
            venue = sum((signed(p) for p in positions if p.symbol == diff.symbol), ZERO)
            return venue if drifted(diff.our_position or ZERO, venue, self.config.position_tolerance) else None
        order_id = diff.venue_order.order_id if diff.venue_order else diff.ours.order_id if diff.ours else None
        try:
            fetched = await self._call(
                "fetch_order", lambda: self.venue.fetch_order(diff.symbol, client_order_id=diff.key, order_id=order_id)
            )
        except OrderNotFound:
            # Not at the venue at all: a ghost that vanished is no finding; ours and unknown ones are.
            return None if diff.kind in ("ghost_order", "missing_fill") else "not found"
        match diff.kind:
            case "ghost_order":
                return fetched if fetched.status == "open" else None
            case "missing_order":
                return fetched if fetched.status != "open" else None  # open: the list was stale
            case "missing_fill":
                return fetched if diff.ours is not None and fetched.filled > diff.ours.booked else None
        return fetched  # unresolved_unknown: whatever the venue says settles it

    async def _judge(self, diff: Difference, fetched: Any, outcome: Outcome) -> ReconciliationFinding | None:
        """Check a confirmed difference against the record as it is now; act by policy."""
        record = self.record()
        ours: OrderRec | None = record.orders.get(diff.key) if diff.kind != "position_drift" else None
        fix = self.config.policy == "fix"
        action = "none"
        venue_order = fetched if isinstance(fetched, OrderUpdate) else None
        match diff.kind:
            case "ghost_order":
                if ours is not None and ours.status not in ENDED:
                    return None  # its event arrived meanwhile
                if fix and self.config.ours(diff.key):
                    action = await self._cancel_ghost(diff, outcome)
                elif fix:
                    action = "not_ours"
            case "missing_order" | "missing_fill":
                if ours is None or (venue_order is not None and _reflected(ours, venue_order)):
                    return None
                if fix and venue_order is not None:
                    action = self._settle(venue_order, outcome)
            case "unresolved_unknown":
                if ours is None or ours.status != "unknown":
                    return None
                if fix and venue_order is not None:
                    action = self._settle(venue_order, outcome)
                elif venue_order is None and self._now_ms() - ours.seen < max(self.config.grace_ms, self.config.unknown_after_ms):
                    return None  # not at the venue, and not overdue yet
            case "position_drift":
                mine = record.positions[diff.key].contracts if diff.key in record.positions else ZERO
                if not drifted(mine, fetched, self.config.position_tolerance):
                    return None
                if fix:
                    action = self._drift_alert(diff.key, mine, fetched, outcome)
                return self._finding(diff, action, mine, fetched, {"venue": {"contracts": fetched}, "ours": {"contracts": mine}})
        evidence = {"venue": msgspec.to_builtins(venue_order) if venue_order is not None else str(fetched), "ours": _rec(ours)}
        if diff.venue_order is not None and venue_order is not diff.venue_order:
            evidence["venue_listed"] = msgspec.to_builtins(diff.venue_order)
        expected = ours.booked if ours is not None else None
        actual = venue_order.filled if venue_order is not None else None
        return self._finding(diff, action, expected, actual, evidence)

    # ----------------------------------------------------------------- actions

    async def _cancel_ghost(self, diff: Difference, outcome: Outcome) -> str:
        order_id = diff.venue_order.order_id if diff.venue_order else None
        try:
            order = await self._call(
                "cancel_order", lambda: self.venue.cancel_order(diff.symbol, client_order_id=diff.key, order_id=order_id)
            )
        except OrderNotFound:
            return "vanished"
        self._settle(order, outcome)
        metrics.ACTIONS.labels(self.config.venue, diff.kind, "canceled").inc()
        return "canceled"

    def _settle(self, order: OrderUpdate, outcome: Outcome) -> str:
        """Publish the venue's state of an order as the venue's own event for that fact would be."""
        if order.venue != self.config.venue or order.account != self.config.account:
            log.error("the venue answered about %s/%s; not published", order.venue, order.account)  # pragma: no mutate
            return "refused"
        event = msgspec.structs.replace(
            order,
            id=ids.order_event_id(order.venue, order.account, order.client_order_id, order.status, order.filled),
            ts_local=self._now_ms(),
        )
        outcome.published.append(event)
        metrics.ACTIONS.labels(self.config.venue, "order", "published").inc()
        return "published"

    def _drift_alert(self, symbol: str, ours: Decimal, venue: Decimal, outcome: Outcome) -> str:
        alert = RiskAlert(
            id=ids.content_id(f"alert:reconciler:{self.config.name}:position_drift", (symbol, str(ours), str(venue))),
            component="reconciler",
            instance=self.config.name,
            severity="critical",
            kind="position_drift",
            message=f"{symbol}: {venue} contracts at {self.config.venue}/{self.config.account}, {ours} in our record",
            venue=self.config.venue,
            symbol=symbol,
            value=venue - ours,
            threshold=self.config.position_tolerance,
            ts=self._now_ms(),
        )
        outcome.published.append(alert)
        metrics.ACTIONS.labels(self.config.venue, "position_drift", "alerted").inc()
        return "alerted"

    # ----------------------------------------------------------------- reports

    def _finding(
        self, diff: Difference, action: str, expected: Decimal | None, actual: Decimal | None, evidence: dict[str, Any]
    ) -> ReconciliationFinding:
        ours = evidence.get("ours")
        venue = evidence.get("venue")
        return ReconciliationFinding(
            id="",  # set in _report, with the time it is published
            instance=self.config.name,
            venue=self.config.venue,
            account=self.config.account,
            symbol=diff.symbol,
            kind=diff.kind,
            detail=diff.detail,
            action=action,
            client_order_id=diff.key if diff.kind != "position_drift" else None,
            order_id=_order_id(venue) or _order_id(ours),
            expected=expected,
            actual=actual,
            evidence=evidence,
            ts=self._now_ms(),
        )

    def _report(self, finding: ReconciliationFinding, outcome: Outcome) -> None:
        """Publish a finding once per change of what it says (again after `summary_every_ms`)."""
        key = (finding.kind, finding.client_order_id or finding.symbol)
        fingerprint = (finding.action, finding.expected, finding.actual, _fingerprint(finding.evidence))
        before = self._reported.get(key)
        now = finding.ts
        if before is not None and before[0] == fingerprint and now - before[1] < self.config.summary_every_ms:
            return
        self._reported[key] = (fingerprint, now)
        finding = msgspec.structs.replace(finding, id=ids.content_id(f"finding:{self.config.name}:{finding.kind}", (key, now)))
        outcome.findings.append(finding)
        outcome.published.append(finding)
        log.warning(
            "%s %s on %s: %s (action: %s)", finding.kind, key[1], finding.symbol, finding.detail, finding.action
        )  # pragma: no mutate

    def _summary(self, comparison: Comparison, outcome: Outcome, orders: int, positions: int) -> None:
        now = self._now_ms()
        outcome.in_sync = comparison.in_sync and not outcome.findings and not self._reported
        if not outcome.in_sync:
            self._in_sync_at = None
            return
        if self._in_sync_at is not None and now - self._in_sync_at < self.config.summary_every_ms:
            return
        self._in_sync_at = now
        summary = ReconciliationFinding(
            id=f"finding:{self.config.name}:in_sync:{now}",
            instance=self.config.name,
            venue=self.config.venue,
            account=self.config.account,
            symbol="*",
            kind="in_sync",
            detail=f"{orders} open orders and {positions} positions agree with our record",
            action="none",
            evidence={"open_orders": orders, "positions": positions, "record_orders": len(self.record().orders)},
            ts=now,
        )
        outcome.findings.append(summary)
        outcome.published.append(summary)

    # ----------------------------------------------------------------- plumbing

    async def _call(self, method: str, fn: Callable[[], Awaitable[T]]) -> T:
        metrics.VENUE_CALLS.labels(self.config.venue, method).inc()
        return await fn()

    async def _record_caught_up(self) -> None:
        deadline = time.monotonic() + self.config.record_wait_ms / 1000
        while not await self.caught_up():
            if time.monotonic() > deadline:
                raise RecordBehind(f"our record did not catch up with ACCOUNT within {self.config.record_wait_ms} ms")
            await self.poll(0.01)

    async def _publish(self, messages: list[Any]) -> None:
        if not messages:
            return
        try:
            outgoing = address(self.rules, messages)
        except OutputRefused as exc:  # built from a venue's answer: checked like any input
            log.error("not published: %s", exc)  # pragma: no mutate
            metrics.FAILURES.labels(self.config.venue, "output_refused").inc()
            return
        futures = [await self.publisher.send(o.subject, o.payload, o.msg_id) for o in outgoing]
        await asyncio.gather(*futures)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "checks": self.checks,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_trigger": last.trigger if last else "",
            "in_sync": bool(last and last.in_sync),
            "standing_findings": sorted(f"{k}:{key}" for k, key in self._reported),
            "deferred": last.deferred if last else 0,
            "next_wait_s": self.delays[-1] if self.delays else None,
        }


def _reflected(ours: OrderRec, venue: OrderUpdate) -> bool:
    """Our record already says what the venue says (its event arrived while we confirmed)."""
    same_status = ours.status == venue.status or (ours.status in ENDED and venue.status in ENDED)
    return same_status and ours.booked >= venue.filled


def _rec(rec: OrderRec | None) -> dict[str, Any] | str:
    if rec is None:
        return "no such order"
    return {**{f: getattr(rec, f) for f in rec.__struct_fields__}, "booked": rec.booked}


def _order_id(side: Any) -> str | None:
    return side.get("order_id") if isinstance(side, dict) else None


def _fingerprint(evidence: dict[str, Any]) -> Any:
    """What a finding says, without the times that change on every pass."""
    out: list[Any] = []
    for side in ("venue", "ours"):
        v = evidence.get(side)
        if isinstance(v, dict):
            out.append(tuple(str(v.get(k)) for k in ("status", "filled", "booked", "contracts")))
        else:
            out.append(str(v))
    return tuple(out)


def _bounded_trigger(trigger: str) -> str:
    return trigger if trigger in ("start", "interval", "gap", "account", "manual") else "other"
