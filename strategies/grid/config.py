"""Parameters of one grid instance (a `[[grids]]` table)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

import msgspec

from schemas.sanity import PriceBand

_INSTANCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class GridConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance: str  # unique id; also the prefix of every client order id it creates
    venue: str = "sim"
    account: str = "main"
    symbol: str = "BTC/USDT:USDT"
    mode: Literal["long", "short", "neutral"] = "neutral"
    levels: int = 5  # levels on each side of the anchor
    spacing: Decimal = Decimal("0.001")  # geometric: fraction (0.001 = 0.1%); arithmetic: price step
    spacing_type: Literal["geometric", "arithmetic"] = "geometric"
    notional: Decimal = Decimal(100)  # quote money per order (the seed's rule: money, not quantity)
    anchor: Decimal | None = None  # None: the first price seen
    lower: Decimal | None = None  # range bounds: no level outside them
    upper: Decimal | None = None
    trail_levels: int = 2  # re-center when price leaves the grid by this many levels (0 = never)
    max_open_orders: int = 40
    post_only: bool = True
    post_only_retries: int = 3  # post-only rejections of a slot before it falls back to plain limit
    ttl_ms: int = 30_000  # command time-to-live
    price_band: PriceBand = PriceBand()  # tickers beyond it are garbage, dead-lettered (schemas/sanity.py)
    metrics_port: int = 0  # /health, /status and /metrics (Prometheus) on 127.0.0.1; 0 = off

    def __post_init__(self) -> None:
        if not _INSTANCE.match(self.instance):
            raise ValueError("`instance` must be 1-32 of a-z, 0-9, '-', '_'")
        if self.levels < 1:
            raise ValueError("`levels` must be at least 1")
        if self.spacing <= 0:
            raise ValueError("`spacing` must be positive")
        if self.spacing_type == "geometric" and self.spacing >= 1:
            raise ValueError("`spacing` is a fraction for geometric grids and must be below 1 (0.001 = 0.1%)")
        if self.notional <= 0:
            raise ValueError("`notional` must be positive")
        if self.anchor is not None and self.anchor <= 0:
            raise ValueError("`anchor` must be positive")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError("`lower` must be below `upper`")
        if self.anchor is not None:
            if self.lower is not None and self.anchor < self.lower:
                raise ValueError(f"`anchor` {self.anchor} is below `lower` {self.lower}")
            if self.upper is not None and self.anchor > self.upper:
                raise ValueError(f"`anchor` {self.anchor} is above `upper` {self.upper}")
        if self.trail_levels < 0:
            raise ValueError("`trail_levels` must not be negative")
        # Every unit of inventory rests a closing order: there must be room for all of them.
        units = self.levels * (2 if self.mode == "neutral" else 1)
        if self.max_open_orders < units:
            raise ValueError(
                f"`max_open_orders` {self.max_open_orders} must be at least {units} "
                f"(levels x {'2 sides' if self.mode == 'neutral' else '1 side'}), so every filled level can rest its closing order"
            )
        if self.post_only_retries < 0:
            raise ValueError("`post_only_retries` must not be negative")
        if self.ttl_ms <= 0:
            raise ValueError("`ttl_ms` must be positive")
