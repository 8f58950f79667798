"""Risk end to end: the simulated exchange, the executor, the risk monitor and a grid, each a real
process on a real nats-server. The exchange is frozen with SIGSTOP (its feed dies), or its prices
follow a scripted crash; the breakers must stop the right things and an operator restarts them."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NotFoundError

from bus.embedded import EmbeddedServer
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.streams import BREAKERS
from monitors.alerts import store as alerts_store
from monitors.alerts.presence import Remembered
from monitors.alerts.testing import RecordingWebhook
from schemas import ids
from schemas.account import OrderUpdate
from schemas.codec import decode
from schemas.commands import PlaceOrder
from schemas.ops import BreakerChange, ControlCommand, ReconciliationFinding
from strategies.grid.lattice import client_prefix, parse_client_order_id
from testkit.bus import eventually
from testkit.processes import Components
from venues.errors import Transient
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue

pytestmark = pytest.mark.e2e

SYMBOL = "BTC/USDT:USDT"
SCOPE = "symbol.sim.BTC-USDT-USDT"
PREFIX = client_prefix("e2e")
CONFIG = """
data_dir = "{data}"
[nats]
url = "{url}"
[sim]
tick_ms = 250
history_minutes = {history}
{prices}
[executor]
risk_heartbeat_ms = 3000
[risk]
instance = "e2e"
clock_ms = 100
heartbeat_ms = 300
[[risk.watch]]
venue = "sim"
account = "main"
symbols = ["BTC/USDT:USDT"]
[risk.feed_stale]
ttl_ms = 2000
cooldown_ms = 0            # only an operator closes it
[risk.flash_crash]
move = "0.08"
window_ms = 5000
[risk.latency]
enabled = false            # a frozen venue answers late on purpose here
[alerts]
telegram_api = "{webhook}"
group_ms = 200
ping_interval_ms = 500
ping_wait_ms = 300
silence_ms = 1500
[[grids]]
instance = "e2e"
venue = "sim"
account = "main"
symbol = "BTC/USDT:USDT"
mode = "neutral"
levels = 3
spacing = "{spacing}"
notional = "{notional}"
trail_levels = 50
max_open_orders = 12
post_only = true
"""


class System(Components):
    def __init__(self, workdir: Path, url: str) -> None:
        super().__init__(workdir)
        self.url = url

    def configure(
        self, prices: str = "", history: int = 30, spacing: str = "0.0005", notional: str = "200", webhook: str = "http://127.0.0.1:9"
    ) -> None:
        text = CONFIG.format(
            data=self.workdir / "data", url=self.url, prices=prices, history=history, spacing=spacing, notional=notional, webhook=webhook
        )
        self.config.write_text(text)


@pytest.fixture
def system(tmp_path: Path, nats_server: EmbeddedServer) -> Iterator[System]:
    s = System(tmp_path, nats_server.url)
    yield s
    s.stop()


async def grid_orders(venue: SimVenue) -> dict[str, str]:
    """The grid's resting orders at the exchange: client id -> role (open or close)."""
    out: dict[str, str] = {}
    try:
        orders = await venue.fetch_open_orders(SYMBOL)
    except Transient:  # not up yet
        return out
    for o in orders:
        parsed = parse_client_order_id(PREFIX, o.client_order_id)
        if parsed is not None:
            out[o.client_order_id] = parsed[0]
    return out


async def bucket(bus: Client, scope: str) -> str:
    kv = await bus.jetstream().key_value(BREAKERS.name)
    try:
        entry = await kv.get(scope)
    except (KeyNotFoundError, NotFoundError):
        return "ok"
    return msgspec.json.decode(entry.value or b"{}", type=BreakerChange).state


async def stored(bus: Client, stream: str, subject: str) -> list[object]:
    out: list[object] = []
    async for batch in read_stream(bus, stream, subjects=(subject,)):
        out += [decode(m.data) for m in batch]
    return out


async def operator_reset(bus: Client) -> None:
    fields: dict[str, object] = dict(
        target_component="risk", target_instance="e2e", action="reset", operator="alice", ts=int(time.time() * 1000)
    )
    await (await Publisher(bus).start()).publish(ControlCommand(id=ids.content_id("ctl", fields), **fields))  # type: ignore[arg-type]


async def test_a_dead_feed_halts_its_market_cancels_its_orders_refuses_places_and_an_operator_restarts_it(
    bus: Client, system: System
) -> None:
    webhook = await RecordingWebhook().start()
    system.configure(webhook=webhook.url)
    system.start("sim", "executor", "risk", "grid")
    system.start("alerts", secrets=webhook.environ())
    venue = SimVenue(bus)
    await eventually(lambda: _count(grid_orders(venue), lambda n: n >= 4), timeout=60, what="the grid's resting orders")

    # The alerts monitor alerts a service that answered and then fell silent: it must have seen
    # the exchange answer before the freeze (a slow start under load would otherwise miss it).
    await eventually(lambda: _alerts_know(bus, "sqt-venue-sim/"), timeout=60, what="the alerts monitor to see the exchange answer")
    system.signal("sim", signal.SIGSTOP)  # its feed dies (and its API with it)
    frozen = time.monotonic()
    await eventually(lambda: _state(bucket(bus, SCOPE), "halted"), timeout=20, what="the staleness breaker")
    print(f"staleness breaker stored {time.monotonic() - frozen:.2f} s after the freeze (TTL 2 s)")
    changes = [c for c in await stored(bus, "OPS", "ops.risk.e2e.breaker") if isinstance(c, BreakerChange)]
    assert [(c.scope, c.state, c.trips[0].breaker) for c in changes] == [(SCOPE, "halted", "feed_stale")]

    # A new exposure-increasing order is refused by the executor, without asking the venue (once
    # the commands ahead of it on this market, the cancel-all among them, are through).
    now = int(time.time() * 1000)
    place = PlaceOrder(id=ids.place_id("sim", "main", "manual1"), venue="sim", account="main", symbol=SYMBOL, client_order_id="manual1",
                       side="buy", price=Decimal("50000"), amount=Decimal("0.001"), origin="test/e2e", ts=now)  # fmt: skip
    await (await Publisher(bus).start()).publish(place)
    subject = "acct.sim.main.BTC-USDT-USDT.order"

    async def refused() -> bool:
        for event in await stored(bus, "ACCOUNT", subject):
            if isinstance(event, OrderUpdate) and event.client_order_id == "manual1":
                assert (event.status, event.reason) == ("rejected", "breaker_open")
                return True
        return False

    # Frozen until alerts noticed the silence (its ping misses it for `silence_ms`), then back.
    await eventually(lambda: webhook.count("slack", "stopped answering its ping") >= 1, timeout=30, what="the silence noticed")
    system.signal("sim", signal.SIGCONT)  # the cancel-all reaches the exchange
    await eventually(refused, timeout=60, what="the place to be refused breaker_open")
    await eventually(lambda: _count(grid_orders(venue), lambda n: n == 0), timeout=60, what="every resting order cancelled")
    assert await bucket(bus, SCOPE) == "halted"  # data is back, but only an operator closes it

    await operator_reset(bus)
    await eventually(lambda: _state(bucket(bus, SCOPE), "ok"), timeout=20, what="the operator's reset")
    await eventually(lambda: _count(grid_orders(venue), lambda n: n >= 4), timeout=60, what="the grid trading again")

    # Each of these reached both channels, once.
    said = (f"breaker {SCOPE} halted", f"breaker {SCOPE} closed", "stopped answering its ping", "answers again")
    try:
        await eventually(lambda: all(webhook.count(c, m) >= 1 for c in ("slack", "telegram") for m in said), timeout=30, what="the alerts")
        system.signal("alerts", signal.SIGTERM)  # nothing more comes in later, and nothing twice
        await asyncio.to_thread(system.procs["alerts"].wait, 10)
        assert {(c, m): webhook.count(c, m) for c in ("slack", "telegram") for m in said} == {
            (c, m): 1 for c in ("slack", "telegram") for m in said
        }
    finally:
        await webhook.stop()


async def test_a_scripted_crash_reduces_its_market_opening_orders_go_and_closing_orders_stay(bus: Client, system: System) -> None:
    # One candle per second (4 prints of 250 ms): flat, then 10% down within 5 s, then flat.
    rows = ["timestamp,open,high,low,close,volume"] + [f"{i},100,100,100,100,40" for i in range(60)]
    path = [100, 98, 96, 94, 92, 90]
    rows += [f"{60 + i},{a},{a},{b},{b},40" for i, (a, b) in enumerate(zip(path, path[1:]))]
    rows += [f"{70 + i},90,90,90,90,40" for i in range(3_000)]
    csv = system.workdir / "crash.csv"
    csv.write_text("\n".join(rows) + "\n")
    system.configure(prices=f'prices = "csv"\ncsv_path = "{csv}"', history=30, spacing="0.004", notional="50")
    system.start("sim", "executor", "risk", "grid")
    venue = SimVenue(bus)
    await eventually(lambda: _state(bucket(bus, SCOPE), "reduce_only"), timeout=90, what="the flash-crash breaker")
    [change] = [c for c in await stored(bus, "OPS", "ops.risk.e2e.breaker") if isinstance(c, BreakerChange)]
    assert change.trips[0].breaker == "flash_crash" and change.trips[0].value is not None and change.trips[0].value > Decimal("0.08")

    async def only_closing() -> bool:
        roles = await grid_orders(venue)
        return bool(roles) and set(roles.values()) == {"close"}

    await eventually(only_closing, timeout=30, what="the grid's opening orders cancelled and its closing orders resting")


async def _alerts_know(bus: Client, service: str) -> bool:
    """The alerts monitor stored a presence in which `service` (a name prefix) answered its ping."""
    kv = await bus.jetstream().key_value(alerts_store.BUCKET)
    try:
        entry = await kv.get(alerts_store.PRESENCE)
    except (KeyNotFoundError, NotFoundError):
        return False
    known = msgspec.json.decode(entry.value or b"{}", type=Remembered).known
    return any(name.startswith(service) for name in known)


async def _count(orders: Awaitable[dict[str, str]], ok: Callable[[int], bool]) -> bool:
    return ok(len(await orders))


async def _state(got: Awaitable[str], want: str) -> bool:
    return await got == want


RECONCILER = """
[reconciler]
policy = "fix"
client_prefixes = ["e2eg"]
interval_ms = 300
grace_ms = 1500
"""


async def test_a_ghost_of_ours_is_cancelled_a_vanished_order_is_booked_and_both_are_alerted_once(bus: Client, system: System) -> None:
    webhook = await RecordingWebhook().start()
    system.configure(webhook=webhook.url)
    config = system.workdir / "sqt.toml"
    config.write_text(config.read_text().replace("[sim]\n", "[sim]\ntest_hooks = true\n") + RECONCILER)
    system.start("sim", "executor", "reconciler")
    system.start("alerts", secrets=webhook.environ())
    venue = SimVenue(bus)
    candles: list[Any] = []

    async def answering() -> bool:
        try:
            candles[:] = await venue.fetch_ohlcv(SYMBOL, limit=1)
        except Transient:
            return False
        return bool(candles)

    await eventually(answering, timeout=60, what="the exchange answering")
    price = candles[-1].close
    low = (price * Decimal("0.8")).quantize(Decimal(1))

    # An order of ours the exchange never told anyone about, and one whose end it kept quiet.
    gone = await venue.create_order(OrderRequest(symbol=SYMBOL, client_order_id="e2eggone", side="buy", amount=Decimal("0.001"), price=low))
    await venue.hidden_create_order(
        OrderRequest(symbol=SYMBOL, client_order_id="e2egghost", side="buy", amount=Decimal("0.001"), price=low)
    )
    await venue.hidden_cancel_order(SYMBOL, client_order_id="e2eggone")
    assert (await venue.fetch_order(SYMBOL, client_order_id="e2egghost")).status == "open"  # nobody acts on the new

    async def ghost_cancelled() -> bool:
        return (await venue.fetch_order(SYMBOL, client_order_id="e2egghost")).status == "canceled"

    await eventually(ghost_cancelled, timeout=30, what="the ghost cancelled by the reconciler")

    async def booked() -> bool:
        events = [e for e in await stored(bus, "ACCOUNT", "acct.sim.main.BTC-USDT-USDT.order") if isinstance(e, OrderUpdate)]
        return any(e.client_order_id == "e2eggone" and e.status == "canceled" for e in events)

    await eventually(booked, timeout=30, what="the vanished order's real state published")
    findings = [f for f in await stored(bus, "OPS", "ops.reconciler.*.finding") if isinstance(f, ReconciliationFinding)]
    actions = {(f.kind, f.client_order_id, f.action) for f in findings if f.kind != "in_sync"}
    assert actions == {("ghost_order", "e2egghost", "canceled"), ("missing_order", "e2eggone", "published")}, actions
    assert gone.order_id is not None

    said = ("reconciliation: ghost_order on sim/main", "reconciliation: missing_order on sim/main")
    try:
        await eventually(lambda: all(webhook.count(c, m) >= 1 for c in ("slack", "telegram") for m in said), timeout=30, what="alerts")
        system.signal("alerts", signal.SIGTERM)
        await asyncio.to_thread(system.procs["alerts"].wait, 10)
        assert {(c, m): webhook.count(c, m) for c in ("slack", "telegram") for m in said} == {
            (c, m): 1 for c in ("slack", "telegram") for m in said
        }
    finally:
        await webhook.stop()
