"""The status line of `sqt up` says which risk breakers are open, and stops saying it once they close."""

from __future__ import annotations

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
