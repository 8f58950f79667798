"""The ccxt publisher's own cost: recorded Binance USD-M websocket messages through ccxt alone, and
through ccxt and our path, side by side in one run.

    .venv/bin/python bench/publisher.py [--messages 30000] [--rounds 3]

The messages are written in the venue's exact format (`kline`, `aggTrade`, `24hrMiniTicker`, the
three streams the publisher subscribes on USD-M), as JSON text like the socket delivers them, over
a market that moves minute by minute (so candles close and prices stay believable).

- ccxt alone: decode the text and `exchange.handle_message` (ccxt parses it into its unified
  structure and caches it): the ceiling, what any ccxt user pays.
- ours, encoded: the same, then our feed (parse.* to our events, the price sanity check, a
  candle's close) and the codec, handing the bytes to a publisher that keeps them: what the
  publisher adds before the network.
- ours, published: the same into a real nats-server (JetStream acks awaited at the end).

The ratio is ours / ccxt's time per message. Latency is the time one message spends in our code
(after ccxt handed it over, until its events are with the publisher), p50 and p99.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import uvloop

from bus import streams
from bus.connection import connect
from bus.publisher import Publisher
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.feeds import CandleFeed, Context, TickerFeed, TradeFeed
from publishers.ccxt.gaps import CandleTrack, TradeTrack, VenueClock
from publishers.ccxt.outbox import Outbox
from publishers.ccxt.runner import our_markets
from schemas.codec import encode
from schemas.subjects import subject_of
from testkit.bus import start_server
from venues.ccxt.config import CcxtVenueConfig
from venues.ccxt.exchange import build

MARKETS = str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ccxt" / "markets" / "binance.json")
SYMBOL = "BTC/USDT:USDT"
MIN = 60_000


def recorded(n: int, t0: int) -> list[str]:
    """`n` messages as Binance USD-M sends them: per second of the venue, a kline update, two
    aggregated trades and a mini ticker, every 60th second the minute's final kline."""
    out: list[str] = []
    agg = 5_000_000_000
    second = 0
    while len(out) < n:
        t = t0 + second * 1000
        minute, into = divmod(second, 60)
        o = 60_000.0 + minute * 3.5
        c = o + (into % 7) * 0.3 - 0.9
        k = {"t": t0 + minute * MIN, "T": t0 + minute * MIN + MIN - 1, "s": "BTCUSDT", "i": "1m", "f": agg - 100, "L": agg, "o": f"{o:.1f}"}
        k |= {"c": f"{c:.1f}", "h": f"{o + 2.1:.1f}", "l": f"{o - 1.2:.1f}", "v": f"{12.345 + into:.3f}", "n": 100 + into, "x": into == 59}
        k |= {"q": "740000.12", "V": "6.100", "Q": "366000.10", "B": "0"}
        out.append(json.dumps({"e": "kline", "E": t + 5, "s": "BTCUSDT", "k": k}))
        for j in range(2):
            agg += 1
            trade = {"e": "aggTrade", "E": t + 10 + j, "a": agg, "s": "BTCUSDT", "p": f"{c + 0.1 * j:.1f}", "q": f"{0.003 + 0.001 * j:.3f}"}
            out.append(json.dumps(trade | {"f": agg * 3, "l": agg * 3 + 1, "T": t + 9 + j, "m": j == 1}))
        mini = {"e": "24hrMiniTicker", "E": t + 20, "s": "BTCUSDT", "c": f"{c:.1f}", "o": "59000.0", "h": "61000.0", "l": "58000.0"}
        out.append(json.dumps(mini | {"v": "123456.789", "q": "7400000000.00"}))
        second += 1
    return out[:n]


class Keep:
    """A publisher that keeps the encoded bytes (what ours costs before the network)."""

    def __init__(self) -> None:
        self.kept = 0

    async def send_message(self, message: Any, headers: Any = None) -> asyncio.Future[Any]:
        data = encode(message)
        subject_of(message)
        self.kept += len(data)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def exchange() -> Any:
    cfg = CcxtVenueConfig(exchange="binanceusdm", rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9", markets_file=MARKETS)
    return build("binanceusdm", "main", cfg, streaming=True)


async def ccxt_only(messages: list[str]) -> float:
    ex = exchange()
    client = ex.client("ws://127.0.0.1:9/market/ws/0")
    started = time.perf_counter()
    for text in messages:
        ex.handle_message(client, json.loads(text))
    took = time.perf_counter() - started
    await ex.close()
    return took


async def ours(messages: list[str], publisher: Any) -> tuple[float, list[float], int]:
    """(seconds, per-message seconds in our code, events)."""
    ex = exchange()
    await ex.load_markets()
    client = ex.client("ws://127.0.0.1:9/market/ws/0")
    cfg = PublisherConfig(venue="binanceusdm", symbols=[SYMBOL], history_candles=0)
    out = Outbox(publisher, "binanceusdm")
    out.start()
    ctx = Context("binanceusdm", ex, cfg, out, VenueClock(), our_markets(ex, cfg))
    candles = CandleFeed(ctx, SYMBOL, CandleTrack(MIN, history=0))
    trades = TradeFeed(ctx, SYMBOL, TradeTrack())
    tickers = TickerFeed(ctx, SYMBOL)
    spent: list[float] = []
    events = 0
    put = out.put

    async def counted(batch: Any) -> None:
        nonlocal events
        events += len(batch)
        await put(batch)

    setattr(out, "put", counted)  # noqa: B010 - counts what the feeds hand over
    started = time.perf_counter()
    for text in messages:
        message = json.loads(text)
        ex.handle_message(client, message)
        kind = message["e"]
        t0 = time.perf_counter()
        if kind == "kline":
            await candles.handle([ex.ohlcvs[SYMBOL]["1m"][-1]], resumed=False)
        elif kind == "aggTrade":
            await trades.handle([ex.trades[SYMBOL][-1]], resumed=False)
        else:
            await tickers.handle(ex.tickers[SYMBOL], resumed=False)
        spent.append(time.perf_counter() - t0)
        if len(out.pending) > 5_000:
            await out.flush(60)
    await out.flush(60)
    took = time.perf_counter() - started
    await out.close()
    await ex.close()
    return took, spent, events


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


async def main(args: argparse.Namespace) -> None:
    t0 = (int(time.time() * 1000) // MIN - 1440) * MIN  # yesterday: never ahead of the bus
    messages = recorded(args.messages, t0)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            nc = await connect(server.url, name="bench-publisher", attempts=5)
            await streams.apply(nc.jetstream())
            publisher = await Publisher(nc).start()
            rows: dict[str, list[float]] = {"ccxt": [], "encoded": [], "published": []}
            latency: list[float] = []
            events = 0
            for _ in range(args.rounds):
                rows["ccxt"].append(await ccxt_only(messages))
                took, spent, events = await ours(messages, Keep())
                rows["encoded"].append(took)
                latency += spent
                took, _, _ = await ours(messages, publisher)
                rows["published"].append(took)
            await publisher.close()
            await nc.close()
        finally:
            server.stop()
    n = len(messages)
    ccxt_s = statistics.median(rows["ccxt"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, uvloop")
    print(f"{n:,} recorded Binance USD-M messages (kline, aggTrade, 24hrMiniTicker), {events:,} events each pass; median of {args.rounds}")
    print(f"  ccxt alone (decode + handle_message)            {n / ccxt_s:>10,.0f} msg/s")
    for name, label in (("encoded", "ccxt + ours, encoded (no network)"), ("published", "ccxt + ours, published to JetStream")):
        s = statistics.median(rows[name])
        print(f"  {label:<46} {n / s:>10,.0f} msg/s  {s / ccxt_s:.2f}x ccxt's time")
    print(f"  time in our code per message: p50 {pct(latency, 0.5):.1f} us, p99 {pct(latency, 0.99):.1f} us (encoded path)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    logging.getLogger("venue.ccxt").setLevel(logging.ERROR)  # a public-only exchange has no key, on purpose
    uvloop.install()
    asyncio.run(main(parser.parse_args()))
