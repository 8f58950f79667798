"""The reconciler against a real nats-server and the real simulated exchange (lock-step clock).

Lost events are made with the exchange's test hooks: `hidden_create_order` places an order whose
account events never reach ACCOUNT (a ghost to us), `hidden_cancel_order` takes one of ours off
the book without its event (missing to us). Passes are run one at a time (`check_once`) with an
injected clock, so "after the grace period" is a clock setting, never a wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.reader import read_stream
from monitors.reconciler import metrics
from monitors.reconciler.config import ReconcilerConfig
from monitors.reconciler.runner import Parts, build_reconciler
from schemas import ids, subjects
from schemas.account import OrderUpdate
from schemas.codec import decode
from schemas.market import GapMarker
from schemas.ops import ReconciliationFinding, RiskAlert
from testkit.bus import eventually
from venues.errors import Transient
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig
from venues.sim.service import SimService

SYMBOL = "BTC/USDT:USDT"
GRACE_MS = 2_000
PREFIX = "rc-"


@dataclass
class Rig:
    nc: Client
    sim: SimVenue
    parts: Parts
    offset: list[float]  # seconds added to the reconciler's clock
    stop: asyncio.Event
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def reconciler(self) -> Any:
        return self.parts.reconciler

    def later(self) -> None:
        """Move the reconciler's clock past the grace period of everything so far."""
        self.offset[0] += GRACE_MS / 1000 + 1

    async def venue_later(self) -> None:
        """Move the exchange's clock past the grace period (no price moves far: orders rest)."""
        await self.sim.step(GRACE_MS // 500 + 1)

    async def price(self) -> Decimal:
        return (await self.sim.fetch_ohlcv(SYMBOL, limit=1))[-1].close

    async def resting(self, cid: str, hidden: bool) -> OrderUpdate:
        price = ((await self.price()) * Decimal("0.8")).quantize(Decimal("0.1"))
        request = OrderRequest(symbol=SYMBOL, client_order_id=cid, side="buy", amount=Decimal("0.001"), price=price)
        return await (self.sim.hidden_create_order(request) if hidden else self.sim.create_order(request))


async def stored(nc: Client, stream: str, subject: str) -> list[Any]:
    out: list[Any] = []
    if (await nc.jetstream().stream_info(stream)).state.messages == 0:
        return out
    async for batch in read_stream(nc, stream, subjects=(subject,)):
        out += [decode(m.data) for m in batch]
    return out


async def findings(rig: Rig) -> list[ReconciliationFinding]:
    return [f for f in await stored(rig.nc, "OPS", subjects.ops("reconciler", "*", "finding")) if f.kind != "in_sync"]


async def start_rig(bus: Client, policy: str, venue: Any = None, real_sleep: bool = False, **cfg: Any) -> AsyncIterator[Rig]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    service = None
    if venue is None:
        service = SimService(bus, SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5, test_hooks=True))
        tasks.append(asyncio.create_task(service.run(stop)))
        await eventually(lambda: service.service is not None, timeout=30, what="the simulated exchange")
        venue = SimVenue(bus)
        await venue.step(1)
    config = ReconcilerConfig(policy=policy, client_prefixes=[PREFIX], grace_ms=GRACE_MS, **cfg)  # type: ignore[arg-type]
    publisher = await Publisher(bus).start()
    offset = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the loop's waits: recorded, a moment each
        sleeps.append(seconds)
        await asyncio.sleep(0.001)

    sleep = asyncio.sleep if real_sleep else fake_sleep
    parts = build_reconciler(bus, config, venue, publisher, clock=lambda: time.time() + offset[0], sleep=sleep)
    tasks.append(asyncio.create_task(parts.record.run(stop)))
    tasks.append(asyncio.create_task(parts.gaps.run(stop)))
    await asyncio.wait_for(parts.record.caught_up.wait(), 30)
    await asyncio.wait_for(parts.gaps.caught_up.wait(), 30)
    rig = Rig(bus, venue, parts, offset, stop, tasks)
    try:
        yield rig
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await publisher.close()


@pytest.fixture
async def fixing(bus: Client) -> AsyncIterator[Rig]:
    async for rig in start_rig(bus, "fix"):
        yield rig


@pytest.fixture
async def reporting(bus: Client) -> AsyncIterator[Rig]:
    async for rig in start_rig(bus, "report"):
        yield rig


# ----------------------------------------------------------------------------- ghosts


async def test_a_ghost_with_our_prefix_is_left_alone_inside_the_grace_period_then_found_and_canceled(fixing: Rig) -> None:
    rig = fixing
    await rig.resting(f"{PREFIX}ghost", hidden=True)
    first = await rig.reconciler.check_once("manual")
    assert not first.error and first.deferred == 1 and not first.findings  # placed a moment ago
    assert (await rig.sim.fetch_order(SYMBOL, client_order_id=f"{PREFIX}ghost")).status == "open"

    await rig.venue_later()
    rig.later()
    second = await rig.reconciler.check_once("manual")
    [finding] = second.findings
    assert (finding.kind, finding.client_order_id, finding.action) == ("ghost_order", f"{PREFIX}ghost", "canceled")
    assert finding.evidence["ours"] == "no such order" and finding.evidence["venue"]["status"] == "open"
    assert (await rig.sim.fetch_order(SYMBOL, client_order_id=f"{PREFIX}ghost")).status == "canceled"
    assert [f.kind for f in await findings(rig)] == ["ghost_order"]
    # The cancel's outcome is on ACCOUNT and in our record: the next pass finds the account in sync.
    await eventually(lambda: rig.parts.record.state.orders.get(f"{PREFIX}ghost") is not None, what="the record to learn the cancel")
    assert (await rig.reconciler.check_once("manual")).in_sync


async def test_a_ghost_without_our_prefix_is_only_reported_once(fixing: Rig) -> None:
    rig = fixing
    await rig.resting("someone-else", hidden=True)
    await rig.venue_later()
    rig.later()
    outcome = await rig.reconciler.check_once("manual")
    [finding] = outcome.findings
    assert (finding.kind, finding.action) == ("ghost_order", "not_ours")
    assert (await rig.sim.fetch_order(SYMBOL, client_order_id="someone-else")).status == "open"
    again = await rig.reconciler.check_once("manual")
    assert not again.findings and not again.in_sync  # still standing, not repeated every pass
    assert len(await findings(rig)) == 1


async def test_policy_report_cancels_nothing(reporting: Rig) -> None:
    rig = reporting
    await rig.resting(f"{PREFIX}ghost", hidden=True)
    await rig.venue_later()
    rig.later()
    [finding] = (await rig.reconciler.check_once("manual")).findings
    assert (finding.kind, finding.action) == ("ghost_order", "none")
    assert (await rig.sim.fetch_order(SYMBOL, client_order_id=f"{PREFIX}ghost")).status == "open"


# ----------------------------------------------------------------------------- missing orders


async def test_an_order_removed_at_the_exchange_is_reported_missing_and_its_real_state_published(fixing: Rig) -> None:
    rig = fixing
    placed = await rig.resting(f"{PREFIX}gone", hidden=False)
    await eventually(lambda: f"{PREFIX}gone" in rig.parts.record.state.orders, what="the record to hold the order")
    await rig.sim.hidden_cancel_order(SYMBOL, client_order_id=f"{PREFIX}gone")
    inside = await rig.reconciler.check_once("manual")
    assert not inside.findings and inside.deferred == 1  # placed a moment ago: looked at again next time
    assert rig.parts.record.state.orders[f"{PREFIX}gone"].status == "open"

    rig.later()
    [finding] = (await rig.reconciler.check_once("manual")).findings
    assert (finding.kind, finding.action, finding.order_id) == ("missing_order", "published", placed.order_id)
    assert finding.evidence["ours"]["status"] == "open" and finding.evidence["venue"]["status"] == "canceled"
    events = [
        e for e in await stored(rig.nc, "ACCOUNT", subjects.acct("sim", "main", SYMBOL, "order")) if e.client_order_id == f"{PREFIX}gone"
    ]
    assert [e.status for e in events] == ["open", "canceled"]
    assert events[-1].id == ids.order_event_id("sim", "main", f"{PREFIX}gone", "canceled", Decimal(0))
    await eventually(lambda: rig.parts.record.state.orders[f"{PREFIX}gone"].status == "canceled", what="the record to book it")
    assert (await rig.reconciler.check_once("manual")).in_sync


async def test_a_missing_order_under_policy_report_is_reported_and_nothing_is_published_for_it(reporting: Rig) -> None:
    rig = reporting
    await rig.resting(f"{PREFIX}gone", hidden=False)
    await eventually(lambda: f"{PREFIX}gone" in rig.parts.record.state.orders, what="the record to hold the order")
    await rig.sim.hidden_cancel_order(SYMBOL, client_order_id=f"{PREFIX}gone")
    rig.later()
    [finding] = (await rig.reconciler.check_once("manual")).findings
    assert (finding.kind, finding.action) == ("missing_order", "none")
    events = [
        e for e in await stored(rig.nc, "ACCOUNT", subjects.acct("sim", "main", SYMBOL, "order")) if e.client_order_id == f"{PREFIX}gone"
    ]
    assert [e.status for e in events] == ["open"]


# ----------------------------------------------------------------------------- positions


async def test_a_position_changed_without_its_events_drifts_and_fix_alerts_risk(fixing: Rig) -> None:
    rig = fixing
    taker = OrderRequest(symbol=SYMBOL, client_order_id="lost-taker", side="buy", order_type="market", amount=Decimal("0.01"))
    await rig.sim.hidden_create_order(taker)  # fills at once; its fill and position events are lost
    rig.later()
    outcome = await rig.reconciler.check_once("manual")
    [finding] = [f for f in outcome.findings if f.kind == "position_drift"]
    assert (finding.symbol, finding.action, finding.expected, finding.actual) == (SYMBOL, "alerted", Decimal(0), Decimal("0.01"))
    [alert] = await stored(rig.nc, "OPS", subjects.ops("reconciler", "*", "alert"))
    assert isinstance(alert, RiskAlert) and (alert.kind, alert.symbol, alert.value) == ("position_drift", SYMBOL, Decimal("0.01"))


# ----------------------------------------------------------------------------- triggers and backoff


async def test_a_gap_marker_or_an_unknown_outcome_starts_a_check_at_once(bus: Client) -> None:
    async for rig in start_rig(bus, "fix", real_sleep=True, interval_ms=3_600_000):  # no pass but the first on its own
        await triggered(rig)


async def triggered(rig: Rig) -> None:
    loop = asyncio.create_task(rig.reconciler.run(rig.stop))
    rig.tasks.append(loop)
    await eventually(lambda: rig.reconciler.checks == 1, what="the first pass")
    now = int(time.time() * 1000)
    gap = GapMarker(
        id="gap1", venue="sim", symbol=SYMBOL, stream="ticker", since=now - 5_000, until=now, reason="test", ts=now, ts_local=now
    )
    publisher = await Publisher(rig.nc).start()
    await publisher.publish(gap)
    await eventually(lambda: rig.reconciler.checks == 2, what="a pass after the gap marker")
    assert rig.reconciler.last.trigger == "gap"
    unknown = OrderUpdate(
        id="u1", venue="sim", account="main", symbol=SYMBOL, client_order_id=f"{PREFIX}u", side="buy",
        price=Decimal(100), amount=Decimal("0.001"), remaining=Decimal("0.001"), status="unknown", ts=now, ts_local=now,
    )  # fmt: skip
    await publisher.publish(unknown)
    await eventually(lambda: rig.reconciler.checks == 3, what="a pass after the unknown outcome")
    assert rig.reconciler.last.trigger == "account"
    await publisher.close()


class DownVenue:
    """A venue that never answers."""

    name, account = "sim", "main"
    calls = 0

    async def now_ms(self, fresh: bool = False) -> int:
        self.calls += 1
        raise Transient("the exchange is down")

    async def close(self) -> None:
        return None


async def test_a_venue_that_keeps_failing_makes_the_reconciler_back_off_and_say_so(bus: Client) -> None:
    async for rig in start_rig(bus, "fix", venue=DownVenue(), backoff_ms=1_000, backoff_max_ms=8_000):
        await backs_off(rig)


async def backs_off(rig: Rig) -> None:
    bus = rig.nc
    before = metrics.FAILURES.labels("sim", "venue_unavailable")._value.get()
    loop = asyncio.create_task(rig.reconciler.run(rig.stop))
    await eventually(lambda: len(rig.reconciler.delays) >= 6, what="six backoffs")
    await eventually(lambda: len(rig.reconciler.delays) >= 7, what="a seventh")
    rig.stop.set()
    await loop
    assert rig.reconciler.delays[:7] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert rig.reconciler.status()["consecutive_failures"] >= 7
    assert "venue_unavailable" in rig.reconciler.status()["last_error"]
    assert metrics.FAILURES.labels("sim", "venue_unavailable")._value.get() - before >= 7
    [alert] = await stored(bus, "OPS", subjects.ops("reconciler", "*", "alert"))
    assert (alert.kind, alert.value) == ("reconciler_failing", Decimal(3))


async def test_a_pass_never_compares_a_record_behind_account_it_fails_instead_of_inventing_ghosts(bus: Client) -> None:
    stop = asyncio.Event()
    service = SimService(bus, SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5))
    task = asyncio.create_task(service.run(stop))
    await eventually(lambda: service.service is not None, timeout=30, what="the simulated exchange")
    sim = SimVenue(bus)
    await sim.step(1)
    publisher = await Publisher(bus).start()
    config = ReconcilerConfig(grace_ms=0, record_wait_ms=200)
    parts = build_reconciler(bus, config, sim, publisher)  # its record is not running: it never catches up
    price = ((await sim.fetch_ohlcv(SYMBOL, limit=1))[-1].close * Decimal("0.8")).quantize(Decimal("0.1"))
    await sim.create_order(OrderRequest(symbol=SYMBOL, client_order_id="known", side="buy", amount=Decimal("0.001"), price=price))
    outcome = await parts.reconciler.check_once("manual")
    assert outcome.error.startswith("record_behind") and not outcome.findings
    stop.set()
    await task
    await publisher.close()
