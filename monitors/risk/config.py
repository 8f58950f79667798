"""Settings of the risk monitor (the `[risk]` table): what it watches, and each breaker's limit.

Every breaker has the state it puts its scope in (`reduce_only` or `halted`) and a cool-down:
0 means only an operator closes it; otherwise it closes by itself that long after its condition
stopped holding. A limit left unset turns that breaker off. A bad value names its key.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.ops import BreakerState
from schemas.subjects import SubjectError, breaker_scopes, name_token

ZERO = Decimal(0)


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True  # TOML has no null: `enabled = false` turns a breaker off
    state: BreakerState = "reduce_only"
    cooldown_ms: int = 0

    def check(self, key: str) -> None:
        if self.state == "ok":
            raise ValueError(f"`risk.{key}.state` must be reduce_only or halted")
        if self.cooldown_ms < 0:
            raise ValueError(f"`risk.{key}.cooldown_ms` must not be negative")


class FeedStale(Rule, frozen=True, kw_only=True):
    ttl_ms: int = 5_000  # no market data for longer than this: the market's scope stops
    state: BreakerState = "halted"
    # A minute of data again closes it: a feed blip at night must not stop trading until morning
    # (0: only an operator closes it).
    cooldown_ms: int = 60_000


class FlashCrash(Rule, frozen=True, kw_only=True):
    move: Decimal | None = Decimal("0.05")  # fraction of the price, either way
    window_ms: int = 5_000


class PositionLimit(Rule, frozen=True, kw_only=True):
    limits: dict[str, Decimal] = {}  # symbol -> largest position in base units (contracts x size)


class Exposure(Rule, frozen=True, kw_only=True):
    limit: Decimal | None = None  # quote notional of every position together


class Rejects(Rule, frozen=True, kw_only=True):
    rate: Decimal | None = Decimal("0.5")  # share of create outcomes that are refusals or failures
    min_count: int = 10  # ... among at least this many in the window
    window_ms: int = 60_000
    state: BreakerState = "halted"


class Latency(Rule, frozen=True, kw_only=True):
    limit_ms: int | None = 2_000  # command to the venue's answer
    samples: int = 3  # this many answers in a row slower than the limit
    window_ms: int = 30_000  # answers older than this no longer count
    cooldown_ms: int = 30_000


class Margin(Rule, frozen=True, kw_only=True):
    min_ratio: Decimal | None = None  # equity / notional of an account's positions


class Liquidation(Rule, frozen=True, kw_only=True):
    min_distance: Decimal | None = Decimal("0.05")  # |mark - liquidation price| / mark


class DailyLoss(Rule, frozen=True, kw_only=True):
    limit: Decimal | None = None  # realized plus unrealized since 00:00 UTC, in quote
    state: BreakerState = "halted"


class Watched(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str
    account: str
    symbols: list[str]
    quote: str = "USDT"  # the asset an account's equity is counted in


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance: str = "main"
    watch: list[Watched] = msgspec.field(
        default_factory=lambda: [Watched(venue="sim", account="main", symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"])]
    )
    clock_ms: int = 250  # how often the monitor's shell puts the time into its input stream
    heartbeat_ms: int = 1_000  # how often it tells the executors it is alive
    cancel_on_halt: bool = True  # a scope that halts gets a cancel-all for each of its markets
    feed_stale: FeedStale = FeedStale()
    flash_crash: FlashCrash = FlashCrash()
    position: PositionLimit = PositionLimit()
    exposure: Exposure = Exposure()
    rejects: Rejects = Rejects()
    latency: Latency = Latency()
    margin: Margin = Margin()
    liquidation: Liquidation = Liquidation()
    daily_loss: DailyLoss = DailyLoss()
    metrics_port: int = 0  # /health, /status, /metrics; 0 = off

    def __post_init__(self) -> None:
        try:
            name_token("instance", self.instance)
            for w in self.watch:
                name_token("venue", w.venue)
                name_token("account", w.account)
        except SubjectError as exc:
            raise ValueError(f"`risk`: {exc}") from None
        if not self.watch:
            raise ValueError("`risk.watch` must name at least one venue and account")
        for name in ("clock_ms", "heartbeat_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`risk.{name}` must be positive")
        for key in ("feed_stale", "flash_crash", "position", "exposure", "rejects", "latency", "margin", "liquidation", "daily_loss"):
            getattr(self, key).check(key)
        if self.feed_stale.ttl_ms <= 0:
            raise ValueError("`risk.feed_stale.ttl_ms` must be positive")
        if self.flash_crash.window_ms <= 0:
            raise ValueError("`risk.flash_crash.window_ms` must be positive")
        positives = {
            "flash_crash.move": self.flash_crash.move,
            "exposure.limit": self.exposure.limit,
            "rejects.rate": self.rejects.rate,
            "margin.min_ratio": self.margin.min_ratio,
            "liquidation.min_distance": self.liquidation.min_distance,
            "daily_loss.limit": self.daily_loss.limit,
            **{f"position.limits.{s}": v for s, v in self.position.limits.items()},
        }
        for key, value in positives.items():
            if value is not None and (not value.is_finite() or value <= 0):
                raise ValueError(f"`risk.{key}` must be a positive number, got {value}")
        if self.rejects.min_count < 1 or self.rejects.window_ms <= 0:
            raise ValueError("`risk.rejects.min_count` and `risk.rejects.window_ms` must be positive")
        if self.latency.samples < 1 or self.latency.window_ms <= 0:
            raise ValueError("`risk.latency.samples` and `risk.latency.window_ms` must be positive")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("`risk.metrics_port` must be a TCP port or 0")

    def accounts(self) -> list[tuple[str, str]]:
        return [(w.venue, w.account) for w in self.watch]

    def scopes(self) -> frozenset[str]:
        """Every breaker scope a watched market is covered by: the only ones an operator may name."""
        return frozenset(scope for w in self.watch for sym in w.symbols for scope in breaker_scopes(w.venue, sym, w.account))

    def markets(self) -> list[tuple[str, str]]:
        """Every watched (venue, symbol), once."""
        return sorted({(w.venue, s) for w in self.watch for s in w.symbols})
