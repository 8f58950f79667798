"""Settings of the simulated exchange (the `[sim]` table of the config file)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas.market import Market


class SimMarket(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    kind: Literal["spot", "swap"] = "swap"
    tick_size: Decimal
    lot_size: Decimal
    min_amount: Decimal
    min_notional: Decimal = Decimal(5)
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")
    start_price: Decimal
    volatility: Decimal = Decimal("0.0002")  # stdev of the log return per tick
    tick_volume: Decimal = Decimal(1)  # mean traded amount per tick (what resting orders can fill)
    spread_ticks: int = 1
    funding_interval_h: int = 8

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "min_amount", "start_price", "tick_volume"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive")
        if self.volatility < 0:
            raise ValueError("`volatility` must not be negative")

    def market(self) -> Market:
        base, _, rest = self.symbol.partition("/")
        quote, _, settle = rest.partition(":")
        return Market(
            symbol=self.symbol,
            kind=self.kind,
            base=base,
            quote=quote,
            settle=settle or None,
            tick_size=self.tick_size,
            lot_size=self.lot_size,
            min_amount=self.min_amount,
            min_notional=self.min_notional,
            maker_fee=self.maker_fee,
            taker_fee=self.taker_fee,
        )


def _default_markets() -> list[SimMarket]:
    return [
        SimMarket(
            symbol="BTC/USDT:USDT",
            tick_size=Decimal("0.1"),
            lot_size=Decimal("0.001"),
            min_amount=Decimal("0.001"),
            start_price=Decimal(60000),
            tick_volume=Decimal("0.5"),
        ),
        SimMarket(
            symbol="ETH/USDT:USDT",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.01"),
            min_amount=Decimal("0.01"),
            start_price=Decimal(3000),
            tick_volume=Decimal(5),
        ),
        SimMarket(
            symbol="BTC/USDT",
            kind="spot",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.00001"),
            min_amount=Decimal("0.00001"),
            start_price=Decimal(60000),
            tick_volume=Decimal("0.5"),
        ),
    ]


def _default_accounts() -> dict[str, dict[str, Decimal]]:
    return {"main": {"USDT": Decimal(100_000), "BTC": Decimal(1), "ETH": Decimal(10)}}


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "sim"
    seed: int = 42
    tick_ms: int = 500
    clock: Literal["realtime", "lockstep"] = "realtime"
    prices: Literal["random_walk", "csv"] = "random_walk"
    csv_path: str | None = None
    history_minutes: int = 1440  # backfilled on a fresh start
    start_time_ms: int | None = None  # lockstep: the first tick's time (default: now)
    fill_ratio: Decimal = Decimal("0.5")  # share of a tick's volume our resting orders can take
    leverage: Decimal = Decimal(5)
    margin_enabled: bool = True  # spot margin (borrow to short)
    borrow_limit: dict[str, Decimal] = msgspec.field(default_factory=dict)  # per asset; missing = no cap
    closed_orders_kept: int = 500
    client_ids_kept: int = 20_000
    markets: list[SimMarket] = msgspec.field(default_factory=_default_markets)
    accounts: dict[str, dict[str, Decimal]] = msgspec.field(default_factory=_default_accounts)

    def __post_init__(self) -> None:
        if self.tick_ms < 10:
            raise ValueError("`tick_ms` must be at least 10")
        if self.prices == "csv" and not self.csv_path:
            raise ValueError('`csv_path` is required when `prices` is "csv"')
        if not (Decimal(0) < self.fill_ratio <= Decimal(1)):
            raise ValueError("`fill_ratio` must be in (0, 1]")
        if not self.markets:
            raise ValueError("`markets` must list at least one market")
        if not self.accounts:
            raise ValueError("`accounts` must list at least one account")

    def market_map(self) -> dict[str, Market]:
        return {m.symbol: m.market() for m in self.markets}
