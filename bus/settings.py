"""What a component's runner needs to know about the bus, as one typed value.

Runners take this (and their own config type: `GridConfig`, `ExecutorConfig`, `SimConfig`),
never the CLI's whole configuration, so a component can be started from a test, a notebook
or another program without importing `cli`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bus.streams import STREAMS, Retention, StreamSpec, with_retention

if TYPE_CHECKING:
    from venues.ccxt.config import CcxtVenueConfig


@dataclass(frozen=True)
class BusSettings:
    nats_url: str
    retention: Mapping[str, Retention] = field(default_factory=dict)  # operator overrides per stream
    sim_venue: str = "sim"  # the venue name the simulated exchange answers to
    venues: Mapping[str, CcxtVenueConfig] = field(default_factory=dict)  # real venues, through ccxt
    sim_venues: tuple[str, ...] = ()  # more simulated venues beside `sim_venue` (e.g. sim2)

    def simulated(self, venue: str) -> bool:
        return venue == self.sim_venue or venue in self.sim_venues

    def streams(self) -> tuple[StreamSpec, ...]:
        return with_retention(STREAMS, dict(self.retention))
