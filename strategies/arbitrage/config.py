"""Parameters of one funding-arbitrage instance (an `[[arbitrages]]` table).

Its two legs are the funding monitor's pair of the same name (`[[funding.pairs]]`): the config
file names the pair once, and `sqt` fills `legs` from it, so the monitor's spread and the
orders can never be about different markets.
"""

from __future__ import annotations

import re
from decimal import Decimal

import msgspec

_INSTANCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ArbLeg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str
    symbol: str


class ArbConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance: str  # unique id; also the prefix of every client order id it creates
    pair: str  # the funding monitor's pair whose spread it trades
    monitor: str = "main"  # the funding monitor instance publishing that pair's spread
    account: str = "main"  # give it an account of its own: funding and interest are booked per account
    legs: list[ArbLeg] = []  # filled from the pair; the first is sent first (put the thinner market first)
    amount: Decimal = Decimal("0.01")  # base quantity of one entry (both legs hold the same base quantity)
    entry_apr: Decimal = Decimal("0.10")  # enter when the net APR stays at or above this ...
    entry_hold_ms: int = 10_000  # ... for this long (event time), with both legs fresh
    exit_apr: Decimal = Decimal("0.02")  # leave when the net APR falls below this
    band: Decimal = Decimal("0.001")  # entry legs: a limit at most this fraction through the touch
    exit_band: Decimal = Decimal("0.005")  # unwinds and exits: wider, because getting out matters more
    naked_ms: int = 5_000  # one leg filled and the other not: unwind after this long
    spread_fresh_ms: int = 15_000  # a spread snapshot older than this (event time) is not a reason to enter
    stale_exit_ms: int = 120_000  # a leg stale (or the spread missing) this long forces an exit
    unwinds_per_hour: int = 2  # the failure budget: this many unwinds in an hour block new entries
    retry_ms: int = 1_000  # a refused or empty exit or unwind order is retried after this long
    use_margin: bool = False  # allow a margin short of the spot leg (negative funding, spot-perp)
    metrics_port: int = 0  # /health, /status and /metrics (Prometheus) on 127.0.0.1; 0 = off

    def __post_init__(self) -> None:
        if not _INSTANCE.match(self.instance):
            raise ValueError("`instance` must be 1-32 of a-z, 0-9, '-', '_'")
        if not _INSTANCE.match(self.pair):
            raise ValueError("`pair` must name a [[funding.pairs]] entry (1-32 of a-z, 0-9, '-', '_')")
        if self.legs and (len(self.legs) != 2 or self.legs[0] == self.legs[1]):
            raise ValueError("`legs` must be two different markets")
        for name in ("amount", "band", "exit_band"):
            value: Decimal = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"`{name}` must be positive, got {value}")
        for name in ("band", "exit_band"):
            if getattr(self, name) >= Decimal("0.1"):
                raise ValueError(f"`{name}` is a fraction of the price and must be below 0.1 (0.001 = 0.1%)")
        for name in ("entry_apr", "exit_apr"):
            if not getattr(self, name).is_finite():
                raise ValueError(f"`{name}` must be a number")
        if self.exit_apr > self.entry_apr:
            raise ValueError(f"`exit_apr` {self.exit_apr} must not be above `entry_apr` {self.entry_apr}")
        for name in ("entry_hold_ms", "naked_ms", "spread_fresh_ms", "stale_exit_ms", "retry_ms"):
            if getattr(self, name) <= 0 and name != "entry_hold_ms" or getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be positive")
        if self.unwinds_per_hour < 1:
            raise ValueError("`unwinds_per_hour` must be at least 1")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("`metrics_port` must be a TCP port (0 = off)")
