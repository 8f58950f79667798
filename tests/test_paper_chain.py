"""Paper trading from a venue's own stream: a local Binance USD-M (testkit/binance_stream.py) ->
ccxt's real websocket client -> our publisher -> MARKET -> the paper venue's prints. What the
publisher puts on the bus is exactly what the paper venue trades on (tests/test_sim_paper.py
runs the default grid on such prints)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sized
from decimal import Decimal

import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer
from bus.settings import BusSettings
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.runner import run_publisher
from schemas.market import Trade
from testkit.binance_stream import SYMBOL, VENUE, FakeBinance, trades_of
from testkit.bus import eventually
from testkit.paper import dead_letters, paper_config, prints, stored
from venues.sim.service import SimService

pytestmark = pytest.mark.e2e


@pytest.fixture
async def venue() -> AsyncIterator[FakeBinance]:
    server = FakeBinance(minute_s=0.5)
    await server.start()
    yield server
    await server.stop()


async def test_the_trades_a_publisher_streams_from_a_venue_are_the_paper_venues_prints_one_for_one(
    bus: Client, venue: FakeBinance, nats_server: EmbeddedServer
) -> None:
    stop = asyncio.Event()
    paper = SimService(bus, paper_config())
    tasks = [asyncio.create_task(paper.run(stop))]
    await eventually(lambda: paper.feed is not None and paper.feed.live_feed is not None, timeout=20, what="the paper feed")
    cfg = PublisherConfig(venue=VENUE, symbols=[SYMBOL], feeds=["trades"], history_candles=0)
    tasks.append(asyncio.create_task(run_publisher(BusSettings(nats_url=nats_server.url), venue.venue_config(), cfg, stop)))
    try:
        await eventually(lambda: _at_least(prints(bus), 12), timeout=60, what="a dozen paper prints")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    published = [t for t in await stored(bus, "MARKET", f"md.{VENUE}.>") if isinstance(t, Trade)]
    printed = await prints(bus)
    assert len(printed) >= 12
    # One print per published trade, in order, at its price (the fake's prices are on the 0.1 tick)
    # and on its time: the paper venue's clock is the feed's.
    assert [(p.price, p.ts) for p in printed] == [(t.price, t.ts) for t in published[: len(printed)]]
    assert not await dead_letters(bus)
    # ... and those are the venue's own trades.
    truth = {t["T"]: Decimal(t["p"]) for i in range(venue.minute_now() + 2) for t in trades_of(i, venue.t0)}
    assert [truth.get(p.ts) for p in printed] == [p.price for p in printed]


async def _at_least(found: Awaitable[Sized], n: int) -> bool:
    return len(await found) >= n
