"""`sqt run grid --instance ID`: the thin shell around one grid core.

It asks the venue for the market's rules and price (refusing a config that cannot trade
them, naming the field), declares the grid's input stream (the one total order of its inputs:
its ticker, its account's order events, operator controls, risk breakers, its venue snapshot,
sourced from MARKET, ACCOUNT and OPS), publishes a venue snapshot on a first start so that
the core adopts existing orders instead of placing duplicates, and runs the core under the
consumer runtime. Everything else (checkpoints, replay, outputs before acks) is the runtime's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NotFoundError

from bus import checkpoints
from bus.connection import connect
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec
from bus.service import register
from bus.settings import BusSettings
from bus.streams import BREAKERS, DAY, MINUTE, Source, StreamSpec, prepare
from schemas import ids, subjects
from schemas.account import Liquidation, OrderUpdate
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, ControlCommand, VenueSnapshot
from schemas.subjects import breaker_scopes
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.lattice import check_config, client_order_id, client_prefix
from strategies.grid.metrics import GridMetrics
from strategies.grid.state import GridState
from venues.errors import Transient
from venues.factory import open_venue
from venues.protocol import Venue

log = logging.getLogger("grid")

GridInput = Ticker | OrderUpdate | Liquidation | ControlCommand | BreakerChange | VenueSnapshot
SNAPSHOT_ATTEMPTS = 10


class GridConfigError(RuntimeError):
    """The grid cannot trade this market with this config (the message names the field)."""


def input_stream(grid: GridConfig) -> StreamSpec:
    return StreamSpec(
        name=f"IN_GRID_{grid.instance.upper()}",
        subjects=(),
        description=f"inputs of grid {grid.instance}, in the one order its core sees them",
        max_age=7 * DAY,
        duplicate_window=2 * MINUTE,
        sources=(
            Source("MARKET", (subjects.md(grid.venue, grid.symbol, "ticker"),)),
            Source(
                "ACCOUNT",
                (
                    subjects.acct(grid.venue, grid.account, grid.symbol, "order"),
                    subjects.acct(grid.venue, grid.account, grid.symbol, "liquidation"),
                ),
            ),
            Source(
                "OPS",
                (
                    subjects.control("grid", grid.instance),
                    subjects.control("grid"),
                    subjects.ops("risk", "*", "breaker"),
                    subjects.ops("grid", grid.instance, "snapshot"),
                ),
            ),
        ),
        sources_from_now=True,  # a new grid trades from now on, not on the past
    )


def grid_spec(grid: GridConfig) -> ConsumerSpec:
    return ConsumerSpec(
        name=f"grid-{grid.instance}",
        stream=input_stream(grid).name,
        input_type=GridInput,
        state_type=GridState,
        outputs=(subjects.cmd(grid.venue, grid.account, grid.symbol, "*"), subjects.ops("grid", grid.instance, "state")),
        input_stream=input_stream(grid),
        checkpoint_every=1_000,
        checkpoint_interval=1.0,
    )


async def market_and_price(venue: Venue, grid: GridConfig, stop: asyncio.Event) -> tuple[Market, Decimal] | None:
    """The market's rules and its last price, waiting for the venue to answer."""
    delay = 0.5
    while not stop.is_set():
        try:
            markets = await venue.markets()
            if grid.symbol not in markets:
                raise GridConfigError(f"symbol: {venue.name} has no market {grid.symbol} (it has {', '.join(sorted(markets))})")
            candles = await venue.fetch_ohlcv(grid.symbol, limit=1)
            if candles:
                return markets[grid.symbol], candles[-1].close
        except Transient as exc:
            log.info("waiting for venue %s: %s", venue.name, exc)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass
        delay = min(delay * 2, 5.0)
    return None


async def current_breakers(nc: Client, grid: GridConfig) -> dict[str, BreakerChange]:
    """The last change of every breaker scope covering the grid, as the bucket holds it."""
    kv = await nc.jetstream().key_value(BREAKERS.name)
    out: dict[str, BreakerChange] = {}
    for scope in breaker_scopes(grid.venue, grid.symbol, grid.account):
        try:
            entry = await kv.get(scope)
        except (KeyNotFoundError, NotFoundError):
            continue
        if entry.value:
            try:
                out[scope] = msgspec.json.decode(entry.value, type=BreakerChange)
            except msgspec.DecodeError:
                log.warning("breaker %s in the bucket does not decode; the grid waits for its next change", scope)
    return out


async def venue_snapshot(nc: Client, venue: Venue, grid: GridConfig, stream: str) -> VenueSnapshot:
    """What the venue says now, tied to the input sequence it reflects: every input stored up to
    `input_seq` happened before the venue was asked (the core books the later ones itself).

    Open orders and positions are two calls, and a fill between them would be counted twice or
    not at all; so the orders are read again after the positions, until no order of ours
    filled in between (a venue gives no atomic read of both)."""
    input_seq = (await nc.jetstream().stream_info(stream)).state.last_seq
    prefix = client_prefix(grid.instance)

    async def ours() -> list[OrderUpdate]:
        return [o for o in await venue.fetch_open_orders(grid.symbol) if o.client_order_id.startswith(prefix)]

    orders = await ours()
    for attempt in range(SNAPSHOT_ATTEMPTS):
        positions = await venue.fetch_positions([grid.symbol])
        ts = await venue.now_ms()
        again = await ours()
        if _fills(again) == _fills(orders):
            break
        if attempt == SNAPSHOT_ATTEMPTS - 1:
            raise Transient(f"the venue's orders kept filling while the grid read them ({SNAPSHOT_ATTEMPTS} attempts)")
        orders = again
    breakers = await current_breakers(nc, grid)
    fields: dict[str, Any] = dict(
        component="grid",
        instance=grid.instance,
        venue=grid.venue,
        account=grid.account,
        symbol=grid.symbol,
        orders=again,
        positions=positions,
        breakers=breakers,
        input_seq=input_seq,
        ts=ts,
    )
    return VenueSnapshot(id=ids.content_id(f"snapshot:{grid.instance}", fields), **fields)


def _fills(orders: list[OrderUpdate]) -> dict[str, Decimal]:
    return {o.client_order_id: o.filled for o in orders}


async def has_snapshot(nc: Client, stream: str, grid: GridConfig) -> bool:
    """A first start that died before its first checkpoint already published one."""
    try:
        await nc.jetstream().get_last_msg(stream, subjects.ops("grid", grid.instance, "snapshot"))
    except NotFoundError:
        return False
    return True


async def first_start_snapshot(nc: Client, venue: Venue, grid: GridConfig, stream: str, publisher: Publisher, stop: asyncio.Event) -> None:
    """Publish the venue snapshot a first start adopts, waiting out a venue that is not answering."""
    delay = 0.5
    while not stop.is_set():
        try:
            snapshot = await venue_snapshot(nc, venue, grid, stream)
        except Transient as exc:
            log.info("first start: waiting for venue %s to answer (%s)", venue.name, exc)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)
            continue
        await publisher.publish(snapshot)
        log.info(
            "first start: venue snapshot with %d open orders of this grid and %d positions", len(snapshot.orders), len(snapshot.positions)
        )
        return


# The longest id a grid makes in a long life: a slot index of 3 hex digits, a millionth generation.
_LONGEST_TAIL = len(client_order_id("", "close", -0xFFF, 0xFFFFF))


def client_ids_fit(grid: GridConfig, venue_max: int) -> list[str]:
    """A venue that holds shorter client ids than ours (Gate: 26) refuses a grid whose ids would
    outgrow it at start, rather than its orders one day."""
    longest = len(client_prefix(grid.instance)) + _LONGEST_TAIL
    if longest <= venue_max:
        return []
    return [f"instance: its client order ids grow to {longest} characters and {grid.venue} holds {venue_max}: use a shorter instance id"]


async def build_grid(
    nc: Client, venue: Venue, grid: GridConfig, stop: asyncio.Event, publisher: Publisher | None = None
) -> ConsumerRuntime[GridState, Any] | None:
    """The grid's consumer, ready to run: market rules checked, input stream declared, a first
    start's snapshot published. None if `stop` was set while the venue did not answer."""
    found = await market_and_price(venue, grid, stop)
    if found is None:
        return None
    market, price = found
    problems = check_config(grid, market, price)
    problems += client_ids_fit(grid, getattr(venue, "client_id_max", 32))
    if problems:
        raise GridConfigError(f"grid {grid.instance}: " + "; ".join(problems))
    core = GridCore(grid, market)
    spec = grid_spec(grid)
    assert spec.input_stream is not None
    await prepare(nc, (spec.input_stream,), ())  # first, so the snapshot is sourced into it
    publisher = publisher or await Publisher(nc).start()
    if await checkpoints.load(nc, spec.name, GridState) is None and not await has_snapshot(nc, spec.input_stream.name, grid):
        await first_start_snapshot(nc, venue, grid, spec.input_stream.name, publisher, stop)
    return ConsumerRuntime(nc, spec, core, publisher)


async def run_grid(settings: BusSettings, grid: GridConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-grid-{grid.instance}", role="strategy")
    try:
        await prepare(nc, settings.streams())
        await serve_grid(nc, settings, grid, stop)
    finally:
        await nc.close()


async def serve_grid(nc: Client, settings: BusSettings, grid: GridConfig, stop: asyncio.Event, publisher: Publisher | None = None) -> None:
    """One grid on a connection that may carry many (orchestration/host.py): built, announced
    as a service, run until `stop`."""
    venue = open_venue(nc, grid.venue, grid.account, settings)
    try:
        runtime = await build_grid(nc, venue, grid, stop, publisher)
        if runtime is None:
            return
        started = time.time()

        def status() -> dict[str, Any]:
            st = runtime.state
            return {
                "component": "grid",
                "instance": grid.instance,
                "status": st.status,
                **runtime.progress(),
                "position": str(GridCore.position(st)),
                "open_orders": sum(1 for s in st.slots if s.status) + len(st.strays),
                "fills": st.fills,
                "realized_pnl": str(st.realized_pnl),
                "last_price": str(st.last_price),
                "fault": st.fault,
                "uptime_s": round(time.time() - started, 1),
            }

        assert isinstance(runtime.core, GridCore)
        http = await maybe_serve(grid.metrics_port, GridMetrics(runtime.core, lambda: runtime.state).registry, status)
        service = await register(
            nc,
            "grid",
            grid.instance,
            f"{grid.mode} grid on {grid.symbol}",
            status,
            http=address(http),
        )
        try:
            await runtime.run(stop)
        finally:
            await service.stop()
            if http is not None:
                await http.cleanup()
    finally:
        await venue.close()
