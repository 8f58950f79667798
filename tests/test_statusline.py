"""The status line of `sqt up` says which risk breakers are open, and stops saying it once they close."""

from __future__ import annotations

from decimal import Decimal

from nats.aio.client import Client

from bus.publisher import Publisher
from cli.config import Config
from cli.statusline import MarketWatch
from schemas.ops import BreakerChange, Trip
from testkit.bus import eventually

SCOPE = "symbol.sim.BTC-USDT-USDT"


async def test_the_status_line_names_every_open_breaker_and_what_tripped_it(bus: Client) -> None:
    watch = MarketWatch(Config())
    await watch.start(bus)
    assert (await watch.line(bus)).endswith("| risk: no breaker open")
    publisher = await Publisher(bus).start()
    trip = Trip(breaker="feed_stale", state="halted", detail="silent")
    await publisher.publish(
        BreakerChange(id="b1", instance="main", scope=SCOPE, state="halted", previous="ok", reason="r", trips=[trip], ts=1)
    )

    async def says(text: str) -> bool:
        return (await watch.line(bus)).endswith(text)

    await eventually(lambda: says(f"| risk: {SCOPE} halted (feed_stale)"), what="the open breaker on the line")
    await publisher.publish(BreakerChange(id="b2", instance="main", scope=SCOPE, state="ok", previous="halted", reason="r", ts=2))
    await eventually(lambda: says("| risk: no breaker open"), what="the breaker gone from the line")
    await publisher.close()


async def test_the_status_line_sums_up_many_grids_and_drops_a_removed_one(bus: Client) -> None:
    from msgspec.structs import replace

    from orchestration.registry import Registry, grid_record
    from schemas.ops import StrategyState
    from strategies.grid.config import GridConfig

    watch = MarketWatch(Config())
    await watch.start(bus)
    publisher = await Publisher(bus).start()
    for i in range(8):
        state = StrategyState(
            id=f"s{i}",
            component="grid",
            instance=f"g{i}",
            venue="sim",
            account="main",
            symbol="BTC/USDT:USDT",
            status="paused" if i == 0 else "running",
            input_seq=1,
            open_orders=3,
            fills=i,
            realized_pnl=Decimal("0.5"),
            ts=1,
        )
        await publisher.publish(state)
    await eventually(lambda: len(watch.grids) == 8, what="eight grids' states")
    assert "8 grids (1 paused, 7 running): 24 open, 28 fills, pnl 4.0" in await watch.line(bus)
    registry = Registry(bus, publisher)
    rev = await registry.create(grid_record(GridConfig(instance="g7"), "sqt", "t", 1), "add", "t")
    got = await registry.get("grid", "g7")
    assert got is not None
    await registry.update(replace(got[0], desired="removed", policy="cancel", phase="done"), rev, "removed", "t")
    await eventually(lambda: "g7" not in watch.grids, what="the removed grid off the line")
    assert "7 grids (1 paused, 6 running)" in await watch.line(bus)
    await publisher.close()
