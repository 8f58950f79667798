"""Time put into a consumer's own input stream, so that decisions made of silence (a stale feed,
a naked leg's deadline, a cool-down) are taken from the log and replay the same.

A monitor or strategy whose input stream sources `ops.<component>.<instance>.clock` runs `tick`
beside its runtime; its pure core reads the `Clock` events like any other input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bus.publisher import PubAck, Publisher
from schemas.ops import Clock

log = logging.getLogger("bus.clock")


def clock_event(component: str, instance: str, now_ms: int) -> Clock:
    return Clock(id=f"clock:{component}:{instance}:{now_ms}", component=component, instance=instance, ts=now_ms)


def _missed(fut: asyncio.Future[PubAck]) -> None:
    """Take a tick's failure (a missed tick is only a later judgement; the next one comes), so
    that asyncio does not report an exception nobody retrieved."""
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("a clock tick was not stored: %s", fut.exception())


async def tick(publisher: Publisher, component: str, instance: str, period_ms: int, stop: asyncio.Event) -> None:
    """Publish the wall clock's time every `period_ms` until `stop`."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # refused before it was sent: the same
            sent = await publisher.send_message(clock_event(component, instance, int(time.time() * 1000)))
            sent.add_done_callback(_missed)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), period_ms / 1000)
