"""Paper trading in tests: a real venue's public trades as its publisher puts them on the bus, a
deterministic price path to make them from, a paced replay, and readers of what came out.

The feed is what the ccxt publisher publishes (`publishers/ccxt`, `venues/ccxt/parse.py`): a
`Trade` per public trade on `md.<venue>.<symbol token>.trade`, id `trade:<venue>:<symbol>:<id>`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from bus.dlq import ERROR, SEQ
from bus.publisher import Publisher
from bus.reader import read_stream
from schemas import ids, subjects
from schemas.account import Fill
from schemas.codec import decode
from schemas.market import Trade
from venues.sim.config import SimConfig, SimMarket

SOURCE = "binanceusdm"  # the real venue whose feed is replayed
VENUE = "paper"  # the paper venue's own name
SYMBOL = "BTC/USDT:USDT"
MINUTE_MS = 60_000


def btc_market() -> SimMarket:
    """Binance USD-M's BTC/USDT perpetual rules (tick 0.1, lot 0.001)."""
    return SimMarket(
        symbol=SYMBOL, tick_size=Decimal("0.1"), lot_size=Decimal("0.001"), min_amount=Decimal("0.001"), start_price=Decimal(60000)
    )


def paper_config(venue: str = VENUE, **settings: Any) -> SimConfig:
    """A paper venue over the replayed feed, reading MARKET from its first message."""
    fields: dict[str, Any] = dict(venue=venue, prices="paper", paper_venue=SOURCE, paper_from="first", markets=[btc_market()])
    return SimConfig(**(fields | settings))


def feed_trade(n: int, price: str | Decimal, ts: int, amount: str | Decimal = "0.2", **kw: Any) -> Trade:
    """The n-th public trade of the feed, as the publisher would publish it."""
    venue, symbol = kw.pop("venue", SOURCE), kw.pop("symbol", SYMBOL)
    return Trade(
        id=ids.trade_id(venue, symbol, str(n)),
        venue=venue,
        symbol=symbol,
        trade_id=str(n),
        side=kw.pop("side", "buy"),
        price=Decimal(price),
        amount=Decimal(amount),
        ts=ts,
        ts_local=kw.pop("ts_local", ts + 5),
        **kw,
    )


def price_path(start_ms: int, minutes: float, every_ms: int = 250, base: float = 60_000.0) -> list[Trade]:
    """A deterministic path of trades, one every `every_ms` of event time: two waves (periods of
    90 s and 23 s, 0.25% and 0.06% of `base`) on a slow drift, on Binance's 0.1 tick, amounts
    0.05-0.5. Smooth enough that consecutive trades are a few ticks apart, wide enough that a
    grid spaced 0.05% sees its levels traded through both ways within a minute."""
    out = []
    count = int(minutes * MINUTE_MS / every_ms)
    for n in range(count):
        t = n * every_ms / 1000
        move = 0.0025 * math.sin(2 * math.pi * t / 90) + 0.0006 * math.sin(2 * math.pi * t / 23) + 0.00001 * t
        price = Decimal(round(base * (1 + move), 1)).quantize(Decimal("0.1"))
        amount = Decimal("0.05") + Decimal(n * 37 % 10) * Decimal("0.05")
        out.append(feed_trade(n + 1, price, start_ms + n * every_ms, amount, side="buy" if n % 2 else "sell"))
    return out


async def replay(publisher: Publisher, trades: Sequence[Trade], speed: float) -> None:
    """Publish the trades at `speed` times their event-time pace (as a publisher replaying a
    recording would), in order, each stored before the next is sent."""
    if not trades:
        return
    began, first = time.monotonic(), trades[0].ts
    for trade in trades:
        due = began + (trade.ts - first) / 1000 / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.publish(trade)


async def stored(nc: Client, stream: str, *patterns: str) -> list[Any]:
    """Every message of `stream` on these subjects, decoded, in stream order."""
    out: list[Any] = []
    async for batch in read_stream(nc, stream, subjects=patterns):
        out += [decode(m.data) for m in batch]
    return out


async def prints(nc: Client, venue: str = VENUE, symbol: str = SYMBOL) -> list[Trade]:
    """The trades the paper venue published (one per print of its engine)."""
    return [t for t in await stored(nc, "MARKET", subjects.md(venue, symbol, "trade")) if isinstance(t, Trade)]


async def fills(nc: Client, venue: str = VENUE) -> list[Fill]:
    return [f for f in await stored(nc, "ACCOUNT", subjects.acct(venue, "*", "*", "fill")) if isinstance(f, Fill)]


async def dead_letters(nc: Client) -> list[tuple[str, int, str]]:
    """(original subject, its sequence, reason) of every DLQ entry."""
    out = []
    async for batch in read_stream(nc, "DLQ"):
        for m in batch:
            headers = m.headers()
            out.append((m.subject.removeprefix("dlq."), int(headers.get(SEQ, "0")), headers.get(ERROR, "")))
    return out


def toml(config: Path, url: str, sim: SimConfig, *tables: tuple[str, msgspec.Struct]) -> None:
    """Write a config file for `sqt run ...`: NATS at `url`, this `[sim]` (its scalars and
    markets; accounts as the defaults), and more tables: ("executor", ExecutorConfig(...)) for
    `[executor]`, ("grids", GridConfig(...)) for one `[[grids]]` entry."""
    lines = [f'data_dir = "{config.parent / "data"}"', "[nats]", f'url = "{url}"', "[sim]", *_scalars(sim)]
    for market in sim.markets:
        lines += ["[[sim.markets]]", *_scalars(market)]
    for name, table in tables:
        lines += [f"[[{name}]]" if name == "grids" else f"[{name}]", *_scalars(table)]
    config.write_text("\n".join(lines) + "\n")


def _scalars(struct: msgspec.Struct) -> list[str]:
    """`key = value` for each field that is a string, number or boolean (nested tables are left
    at their defaults)."""
    out = []
    for key, value in msgspec.to_builtins(struct).items():
        if isinstance(value, bool):
            out.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, (int, float)):
            out.append(f"{key} = {value}")
        elif isinstance(value, str):
            out.append(f"{key} = {json.dumps(value)}")  # Decimals are strings: TOML reads them back exactly
    return out


def minute_ago(minutes: float) -> int:
    """A minute boundary about `minutes` before now (event times of a recent recording)."""
    now = int(time.time() * 1000) - int(minutes * MINUTE_MS)
    return now - now % MINUTE_MS


__all__ = [
    "SOURCE",
    "SYMBOL",
    "VENUE",
    "btc_market",
    "dead_letters",
    "feed_trade",
    "fills",
    "minute_ago",
    "paper_config",
    "price_path",
    "prints",
    "replay",
    "stored",
    "toml",
]
