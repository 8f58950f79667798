"""The removal of a grid instance, as a durable workflow whose progress is its registry record.

    stopping    the removal takes the instance's consumer lease: no process runs the grid
                any more, and none can start it while the removal goes on
    canceling   every order at the venue with the instance's client id prefix is canceled,
                through the executor, pass after pass, until none is open and no command
                the grid sent can still reach the venue (its commands' time-to-live is past)
    flattening  (policy "flatten") reduce-only IOC orders close the instance's share of the
                venue's position, each sized from what the venue holds after the last one
    done        what the venue still holds for it is recorded (`left_position`)

Each step is written to the record (compare-and-set) before it is acted on, so a process
killed at any point resumes where the record says: cancels and the flattening order carry
ids that a second sending does not place twice, and a closing order is never sized before the
previous one has ended.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from msgspec.structs import replace
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.auth import may_administer
from bus.lease import Lease
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime
from bus.settings import BusSettings
from orchestration.registry import Registry, grid_config, now_ms
from orchestration.removal import cancels, flatten_client_id, flatten_order, share
from schemas.account import ZERO
from schemas.market import Market
from schemas.registry import Action, InstanceRecord
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.lattice import client_prefix
from strategies.grid.runner import grid_spec, input_stream
from venues.errors import OrderNotFound
from venues.factory import open_venue
from venues.protocol import Venue

log = logging.getLogger("removal")

SWEEP_EVERY = 0.5  # seconds between cancel passes
FLATTEN_ATTEMPTS = 20
TERMINAL = ("closed", "canceled", "rejected", "expired")


async def remove_instance(
    nc: Client, settings: BusSettings, registry: Registry, publisher: Publisher, instance: str, stop: asyncio.Event
) -> None:
    got = await registry.get("grid", instance)
    if got is None or got[0].desired != "removed" or got[0].phase == "done":
        return
    rec, rev = got
    grid = grid_config(rec)
    venue = open_venue(nc, rec.venue, rec.account, settings)  # before the lease: a venue gone from the config holds nothing
    lease = Lease(nc, grid_spec(grid).name)
    try:
        await lease.acquire()  # LeaseHeld while another process still runs it: the caller retries
        if rec.phase in ("", "stopping"):
            rec, rev = await _write(registry, rec, rev, "progress", phase="canceling", note="its consumer is stopped")
        if rec.phase == "canceling" and not stop.is_set():
            await _cancel_all(venue, publisher, rec, grid, stop)
            if stop.is_set():
                return
            after = "flattening" if rec.policy == "flatten" else "done"
            if after == "flattening":
                rec, rev = await _write(registry, rec, rev, "progress", phase="flattening", note="no order of it is open")
        if rec.phase == "flattening" and not stop.is_set():
            rec, rev = await _flatten(nc, venue, registry, publisher, rec, rev, grid, stop)
            if stop.is_set():
                return
        if stop.is_set():
            return
        left = await _venue_position(venue, rec.symbol)
        if rec.policy != "flatten":
            note = "orders canceled; the position is left as it is"
        elif rec.flatten_attempt >= FLATTEN_ATTEMPTS:
            note = f"orders canceled; gave up closing the position after {FLATTEN_ATTEMPTS} orders"
        else:
            note = "orders canceled; its position closed (what is left is below the venue's minimums, or another's)"
        rec, rev = await _write(registry, rec, rev, "removed", phase="done", left_position=left, note=note)
        log.info("grid %s removed (%s); the venue holds %s of %s", instance, rec.policy, left, rec.symbol)
        await drop_input_stream(nc, grid)
    finally:
        await venue.close()
        await lease.release()


async def _write(registry: Registry, rec: InstanceRecord, rev: int, action: Action, **changes: object) -> tuple[InstanceRecord, int]:
    return await registry.update(replace(rec, **changes), rev, action, rec.changed_by)


async def _cancel_all(venue: Venue, publisher: Publisher, rec: InstanceRecord, grid: GridConfig, stop: asyncio.Event) -> None:
    prefix = client_prefix(rec.instance)
    # A place the grid sent before it stopped reaches the venue within its time-to-live or never.
    quiet_after = rec.changed_ts + grid.ttl_ms
    session, sweep = now_ms(), 0  # a pass after a restart is a new command, not a duplicate
    while not stop.is_set():
        orders = [o for o in await venue.fetch_open_orders(rec.symbol) if o.client_order_id.startswith(prefix)]
        if not orders and now_ms() >= quiet_after:
            return
        commands = cancels(rec, orders, prefix, f"{session}.{sweep}", now_ms())
        if commands:
            await publisher.publish_all(commands)
            log.info("grid %s: %d cancels sent (pass %d)", rec.instance, len(commands), sweep)
        sweep += 1
        try:
            await asyncio.wait_for(stop.wait(), SWEEP_EVERY)
        except asyncio.TimeoutError:
            pass


async def _flatten(
    nc: Client, venue: Venue, registry: Registry, publisher: Publisher, rec: InstanceRecord, rev: int, grid: GridConfig, stop: asyncio.Event
) -> tuple[InstanceRecord, int]:
    prefix = client_prefix(rec.instance)
    market = (await venue.markets())[rec.symbol]
    while not stop.is_set() and rec.flatten_attempt < FLATTEN_ATTEMPTS:
        if rec.flatten_attempt > 0:
            await _ended(venue, rec.symbol, flatten_client_id(prefix, rec.flatten_attempt - 1), stop)
            await asyncio.sleep(0.5)  # its order update reaches the grid's input stream (sourced)
        # The grid's books do not know the closing orders (their ids are not its own): what they
        # filled is taken off what it holds, or another's position would be closed in its place.
        own = await own_position(nc, grid, market, publisher) + await _closed(venue, rec.symbol, prefix, rec.flatten_attempt)
        held = await _venue_position(venue, rec.symbol)
        close = own if market.kind == "spot" else share(held, own)
        candles = await venue.fetch_ohlcv(rec.symbol, limit=1)
        if not candles:
            raise RuntimeError(f"no price for {rec.symbol} to size the closing order at")
        order = flatten_order(rec, market, prefix, close, candles[-1].close, rec.flatten_attempt, now_ms())
        if order is None:
            return rec, rev
        # The attempt's number is spent before its order is sent: a restart never sizes another
        # order under the same id, and waits for this one to end first.
        rec, rev = await _write(
            registry, rec, rev, "progress", flatten_attempt=rec.flatten_attempt + 1, note=f"closing {close} (venue holds {held})"
        )
        await publisher.publish(order)
        log.info("grid %s: closing %s %s at %s or better (reduce-only IOC)", rec.instance, order.side, order.amount, order.price)
    return rec, rev


async def _closed(venue: Venue, symbol: str, prefix: str, attempts: int) -> Decimal:
    """What the removal's closing orders so far have traded, signed (a buy adds)."""
    out = ZERO
    for n in range(attempts):
        try:
            o = await venue.fetch_order(symbol, client_order_id=flatten_client_id(prefix, n))
        except OrderNotFound:
            continue  # it never reached the venue (it expired in the executor, or was never sent)
        out += o.filled if o.side == "buy" else -o.filled
    return out


async def _ended(venue: Venue, symbol: str, cid: str, stop: asyncio.Event) -> None:
    """Until the order has ended at the venue, or could no longer reach it."""
    deadline = asyncio.get_running_loop().time() + 15.0
    while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
        try:
            if (await venue.fetch_order(symbol, client_order_id=cid)).status in TERMINAL:
                return
        except Exception:  # not there (yet, or never): wait out its time-to-live
            pass
        await asyncio.sleep(0.25)


async def own_position(nc: Client, grid: GridConfig, market: Market, publisher: Publisher) -> Decimal:
    """The instance's own position: its state folded over every input stored so far."""
    try:
        last = (await nc.jetstream().stream_info(input_stream(grid).name)).state.last_seq
    except NotFoundError:
        return ZERO  # it never started: it holds nothing
    runtime = ConsumerRuntime(nc, grid_spec(grid), GridCore(grid, market), publisher)
    await runtime.recover()
    if last > runtime.seq:
        await runtime.replay(last)
    return GridCore.position(runtime.state)


async def _venue_position(venue: Venue, symbol: str) -> Decimal:
    out = ZERO
    for p in await venue.fetch_positions([symbol]):
        if p.symbol == symbol and p.contracts:
            out += p.contracts if p.side == "long" else -p.contracts
    return out


async def drop_input_stream(nc: Client, grid: GridConfig) -> None:
    """A removed instance's sourced copy of the market goes (its orders, fills, commands and
    states stay in ACCOUNT, COMMAND and OPS); the checkpoint stays, a record of where it ended.
    A user that may not delete streams (every one but the admin, bus/auth.py) leaves it, to age
    out under its retention or be deleted by the admin."""
    if not may_administer(getattr(nc, "logged_in_as", None)):
        log.info("%s: input stream %s kept: deleting streams is the admin's", grid.instance, input_stream(grid).name)
        return
    try:
        await nc.jetstream().delete_stream(input_stream(grid).name)
    except NotFoundError:
        pass
