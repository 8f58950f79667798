"""A venue's market rules at start, waiting out a venue that does not answer yet."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from schemas.market import Market
from venues.errors import Transient
from venues.protocol import Venue

log = logging.getLogger("venues")


async def market_rules(venue: Venue, stop: asyncio.Event) -> dict[str, Market] | None:
    """Every market's rules, asking again (0.5 s doubling to 5 s) while the venue does not
    answer; None if `stop` is set first."""
    delay = 0.5
    while True:
        try:
            return await venue.markets()
        except Transient as exc:
            log.info("waiting for venue %s to say its market rules: %s", venue.name, exc)
        if stop.is_set():
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 5.0)
