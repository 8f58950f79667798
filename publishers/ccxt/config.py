"""Settings of one ccxt publisher (`sqt run publisher`): one venue, its public markets and,
optionally, one account's private streams.

    venue = "binanceusdm"
    account = "main"                  # omitted: public data only
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    feeds = ["candles", "tickers", "trades", "funding", "orders", "fills", "positions", "balances"]
    silence_multiple = 10             # a stream quiet for 10 expected intervals is dead
    expected_ms = { candles = 2000 }  # per feed, merged over the defaults; 0 = no watchdog

A feed is streamed through ccxt's `watch_*` where the venue has it and polled over REST where it
does not (or where `poll` asks for it). See docs/adr/0017-ccxt-publisher.md.
"""

from __future__ import annotations

import msgspec

from schemas.subjects import SubjectError, name_token, symbol_token
from venues.ccxt.parse import INTERVAL_MS

PUBLIC_FEEDS = ("candles", "tickers", "trades", "funding")
PRIVATE_FEEDS = ("orders", "fills", "positions", "balances")
FEEDS = PUBLIC_FEEDS + PRIVATE_FEEDS

# How often a healthy stream says something, in ms. Binance pushes a kline every 250 ms and a
# ticker every second even when nothing trades; a thin market may go a minute without a trade.
# Private streams speak only when the account changes, so their silence proves nothing (0: no
# watchdog; ccxt's own keep-alive and the venue's listen-key expiry still close a dead one).
EXPECTED_MS = {
    "candles": 2_000,
    "tickers": 3_000,
    "trades": 30_000,
    "funding": 60_000,
    "orders": 0,
    "fills": 0,
    "positions": 0,
    "balances": 0,
}
# How often a feed the venue cannot stream is fetched over REST.
POLL_MS = {
    "candles": 2_000,
    "tickers": 1_000,
    "trades": 1_000,
    "funding": 60_000,
    "orders": 5_000,
    "fills": 5_000,
    "positions": 5_000,
    "balances": 10_000,
}


class PublisherConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "binanceusdm"
    account: str | None = None  # None: public streams only
    symbols: list[str] = []
    feeds: list[str] = msgspec.field(default_factory=lambda: list(FEEDS))  # private ones run only with an account
    candle_interval: str = "1m"
    silence_multiple: float = 10.0
    expected_ms: dict[str, int] = {}  # per feed, over EXPECTED_MS
    poll_ms: dict[str, int] = {}  # per feed, over POLL_MS
    poll: list[str] = []  # feeds fetched over REST even where the venue streams them
    history_candles: int = 1_440  # closed candles fetched on a first start (nothing stored yet)
    backfill_max_candles: int = 10_080  # at most this many candles per gap (a week of 1m)
    backfill_max_trades: int = 50_000  # ... and public trades
    fills_lookback_ms: int = 86_400_000  # a first start fetches our fills this far back
    reconnect_first_ms: int = 100  # after a lost stream, wait this long, doubling ...
    reconnect_max_ms: int = 10_000  # ... up to this
    instance: str = ""  # empty: "<venue>-<account>" or "<venue>-public"
    metrics_port: int = 0  # /metrics, /health, /status; 0 = off

    def __post_init__(self) -> None:
        try:
            name_token("venue", self.venue)
            if self.account is not None:
                name_token("account", self.account)
            name_token("instance", self.name)
        except SubjectError as exc:
            raise ValueError(str(exc)) from None
        if not self.symbols:
            raise ValueError("`symbols` must name at least one market, e.g. ['BTC/USDT:USDT']")
        for i, symbol in enumerate(self.symbols):
            try:
                symbol_token(symbol)
            except SubjectError as exc:
                raise ValueError(f"`symbols[{i}]`: {exc}") from None
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("`symbols` names a market twice")
        for key in ("feeds", "poll"):
            for i, feed in enumerate(getattr(self, key)):
                if feed not in FEEDS:
                    raise ValueError(f"`{key}[{i}]` {feed!r} is not a feed (feeds: {', '.join(FEEDS)})")
        for key in ("expected_ms", "poll_ms"):
            for feed, value in getattr(self, key).items():
                if feed not in FEEDS:
                    raise ValueError(f"`{key}.{feed}` is not a feed (feeds: {', '.join(FEEDS)})")
                if value < 0 or (key == "poll_ms" and value == 0):
                    raise ValueError(f"`{key}.{feed}` must be {'positive' if key == 'poll_ms' else 'zero (no watchdog) or positive'}")
        if self.candle_interval not in INTERVAL_MS:
            raise ValueError(f"`candle_interval` {self.candle_interval!r} is not one of {', '.join(INTERVAL_MS)}")
        if not self.silence_multiple > 1:
            raise ValueError("`silence_multiple` must be above 1 (a stream is dead after this many expected intervals)")
        for key in ("history_candles", "fills_lookback_ms"):
            if getattr(self, key) < 0:
                raise ValueError(f"`{key}` must not be negative")
        for key in ("backfill_max_candles", "backfill_max_trades", "reconnect_first_ms"):
            if getattr(self, key) <= 0:
                raise ValueError(f"`{key}` must be positive")
        if self.reconnect_max_ms < self.reconnect_first_ms:
            raise ValueError("`reconnect_max_ms` must be at least `reconnect_first_ms`")
        if not 0 <= self.metrics_port <= 65_535:
            raise ValueError("`metrics_port` must be a port number (0 = off)")

    @property
    def name(self) -> str:
        return self.instance or f"{self.venue}-{self.account or 'public'}"

    @property
    def interval_ms(self) -> int:
        return INTERVAL_MS[self.candle_interval]

    def enabled(self) -> list[str]:
        """The feeds that run: every public one asked for, and the private ones with an account."""
        return [f for f in FEEDS if f in self.feeds and (f in PUBLIC_FEEDS or self.account is not None)]

    def silence_ms(self, feed: str) -> int:
        """How long a streamed feed may say nothing before it is treated as dead (0: never)."""
        return int(self.expected_ms.get(feed, EXPECTED_MS[feed]) * self.silence_multiple)

    def poll_every_ms(self, feed: str) -> int:
        return self.poll_ms.get(feed, POLL_MS[feed])
