"""Which Venue implementation serves a venue name."""

from __future__ import annotations

from nats.aio.client import Client

from venues.protocol import Venue
from venues.sim.client import SimVenue


class UnsupportedVenue(ValueError):
    pass


def open_venue(nc: Client, venue: str, account: str, *, sim_venue: str, timeout: float = 3.0) -> Venue:
    """The simulated exchange for its configured name; real exchanges arrive with the ccxt adapter."""
    if venue == sim_venue:
        return SimVenue(nc, venue, account, timeout=timeout)
    raise UnsupportedVenue(f"venue {venue!r} is not supported yet (the simulated exchange is {sim_venue!r})")
