"""Time put into a consumer's own input stream, so that decisions made of silence (a stale feed,
a naked leg's deadline, a cool-down) are taken from the log and replay the same.

A monitor or strategy whose input stream sources `ops.<component>.<instance>.clock` runs `tick`
beside its runtime; its pure core reads the `Clock` events like any other input.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bus.publisher import Publisher
from schemas.ops import Clock


def clock_event(component: str, instance: str, now_ms: int) -> Clock:
    return Clock(id=f"clock:{component}:{instance}:{now_ms}", component=component, instance=instance, ts=now_ms)


async def tick(publisher: Publisher, component: str, instance: str, period_ms: int, stop: asyncio.Event) -> None:
    """Publish the wall clock's time every `period_ms` until `stop`."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a missed tick is only a later judgement; the next one comes
            await publisher.send_message(clock_event(component, instance, int(time.time() * 1000)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), period_ms / 1000)
