"""Which Venue implementation serves a venue name: the simulated exchange, or ccxt for `[venues.*]`."""

from __future__ import annotations

from nats.aio.client import Client

from bus.settings import BusSettings
from venues.protocol import Venue
from venues.sim.client import SimVenue


class UnsupportedVenue(ValueError):
    pass


def open_venue(nc: Client, venue: str, account: str, settings: BusSettings, *, timeout: float = 3.0) -> Venue:
    """One Venue per (venue, account) and process; the caller closes it."""
    if settings.simulated(venue):
        return SimVenue(nc, venue, account, timeout=timeout)
    cfg = settings.venues.get(venue)
    if cfg is not None:
        from venues.ccxt.exchange import build  # ccxt is imported only by processes that trade on it
        from venues.ccxt.venue import CcxtVenue

        return CcxtVenue(build(venue, account, cfg), venue, account)
    known = ", ".join([settings.sim_venue, *settings.sim_venues, *sorted(settings.venues)])
    raise UnsupportedVenue(f"venue {venue!r} is not configured (known: {known}; add a [venues.{venue}] section)")
