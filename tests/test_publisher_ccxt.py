"""The ccxt publisher against a local Binance USD-M: a WebSocket server speaking its market streams
(kline, aggTrade, 24hrTicker; its user data stream for the account) and an HTTP server answering
its REST paths, reached through ccxt's real clients (`rest_url` / `ws_url` point them here), with
a real nats-server. The venue's clock runs fast (a minute every 0.1 s, in the past, so nothing is
dated ahead of the bus) and every candle and trade is a function of its minute, so what the MARKET
stream holds can be checked against the truth: every closed minute exactly once, whatever the
connection did (dropped, silent) in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from nats.aio.client import Client

from bus.reader import read_stream
from bus.settings import BusSettings
from publishers.ccxt import metrics
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.gaps import AccountBook, CandleTrack, TradeTrack, end_marker, open_gap, open_marker
from publishers.ccxt.runner import run_publisher
from schemas import ids
from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.base import OrderStatus
from schemas.codec import decode
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from testkit.bus import eventually
from venues.ccxt.config import CcxtVenueConfig

MARKETS = str(Path(__file__).parent / "fixtures" / "ccxt" / "markets" / "binance.json")
SYMBOL = "BTC/USDT:USDT"
MIN = 60_000
VENUE = "binanceusdm"


# ----------------------------------------------------------------------------- the venue's truth


def minute_values(i: int) -> tuple[int, int, int, int, int]:
    """Minute i's final open, high, low, close (tenths of a dollar) and volume (thousandths)."""
    o = 600_000 + 10 * i
    return o, o + 80, o - 30, o + 50, 10_000 + i


def partial_values(i: int, k: int) -> tuple[int, int, int, int, int]:
    """Minute i after its k-th quarter (0: just opened)."""
    o = 600_000 + 10 * i
    return o, o + 10 * k, o - 10 * min(k, 1), o + 5 * k, 1_000 * k


def tenths(x: int) -> str:
    return f"{x // 10}.{x % 10}"


def thousandths(x: int) -> str:
    return f"{x // 1000}.{x % 1000:03d}"


def trades_of(i: int, t0: int) -> list[dict[str, Any]]:
    """Minute i's two aggregated trades."""
    o = 600_000 + 10 * i
    out = []
    for j in range(2):
        out.append(
            {
                "a": 1_000_000 + 2 * i + j,
                "p": tenths(o + 20 + 10 * j),
                "q": thousandths(10 + 10 * j),
                "T": t0 + i * MIN + 15_000 + 30_000 * j,
                "m": j == 1,
            }
        )
    return out


class FakeBinance:
    """Binance USD-M's market streams and REST, on a fast clock: minute i opens at t0 + i minutes."""

    def __init__(self, minute_s: float = 0.1, first_minute: int = 100) -> None:
        self.minute_s = minute_s
        self.t0 = (int(time.time() * 1000) // MIN - 3 * 1440) * MIN  # three days ago: never ahead of the bus
        self.first_minute = first_minute
        self.started = time.monotonic()
        self.sockets: list[dict[str, Any]] = []
        self.refuse_until = 0.0
        self.requests: Counter[str] = Counter()
        self.funding = "0.00010000"
        self.runner: web.AppRunner | None = None
        self.port = 0
        # One account: orders by venue id, our trades, one position and one wallet balance.
        self.orders: dict[int, dict[str, Any]] = {}
        self.user_trades: list[dict[str, Any]] = []
        self.position = ("0.010", "60000.0", 0)  # amount, entry price, update time
        self.wallet = "1000.00000000"

    # clock
    def now(self) -> int:
        return self.t0 + self.first_minute * MIN + int((time.monotonic() - self.started) / self.minute_s * MIN)

    def minute_now(self) -> int:
        return (self.now() - self.t0) // MIN

    def row(self, i: int, at: int) -> list[Any]:
        """A REST kline row for minute i as the venue knows it at `at`."""
        open_time = self.t0 + i * MIN
        done = at >= open_time + MIN
        o, h, lo, c, v = minute_values(i) if done else partial_values(i, min(3, (at - open_time) // 15_000))
        return [open_time, tenths(o), tenths(h), tenths(lo), tenths(c), thousandths(v), open_time + MIN - 1, "0", 1, "0", "0", "0"]

    def events_between(self, streams: set[str], after: int, until: int) -> list[tuple[int, dict[str, Any]]]:
        """Every stream message timed in (after, until], in time order."""
        out: list[tuple[int, dict[str, Any]]] = []
        first, last = (after - self.t0) // MIN, (until - self.t0) // MIN
        for i in range(max(first, 0), last + 1):
            open_time = self.t0 + i * MIN
            for k, offset in enumerate((0, 15_000, 30_000, 45_000, MIN - 1)):
                t = open_time + offset
                if not after < t <= until:
                    continue
                final = k == 4
                o, h, lo, c, v = minute_values(i) if final else partial_values(i, k)
                if "btcusdt@kline_1m" in streams:
                    kline = {
                        "t": open_time,
                        "T": open_time + MIN - 1,
                        "s": "BTCUSDT",
                        "i": "1m",
                        "f": 1,
                        "L": 2,
                        "o": tenths(o),
                        "c": tenths(c),
                    }
                    kline |= {
                        "h": tenths(h),
                        "l": tenths(lo),
                        "v": thousandths(v),
                        "n": 2,
                        "x": final,
                        "q": "0",
                        "V": "0",
                        "Q": "0",
                        "B": "0",
                    }
                    out.append((t, {"e": "kline", "E": t, "s": "BTCUSDT", "k": kline}))
                if "btcusdt@miniTicker" in streams and not final:  # ccxt's watch_ticker on USD-M
                    out.append((t, self.mini_ticker(t, c)))
            if "btcusdt@aggTrade" in streams:
                for tr in trades_of(i, self.t0):
                    if after < tr["T"] <= until:
                        out.append((tr["T"], {"e": "aggTrade", "E": tr["T"], "s": "BTCUSDT", "f": tr["a"], "l": tr["a"], **tr}))
        out.sort(key=lambda e: e[0])
        return out

    def ticker(self, t: int, close: int) -> dict[str, Any]:
        return {
            "e": "24hrTicker", "E": t, "s": "BTCUSDT", "p": "0", "P": "0", "w": tenths(close), "c": tenths(close), "Q": "0.001",
            "o": tenths(close), "h": tenths(close), "l": tenths(close), "v": "1", "q": "1", "O": t - 86_400_000, "C": t, "F": 1, "L": 2, "n": 2,
        }  # fmt: skip

    def mini_ticker(self, t: int, close: int) -> dict[str, Any]:
        c = tenths(close)
        return {"e": "24hrMiniTicker", "E": t, "s": "BTCUSDT", "c": c, "o": c, "h": c, "l": c, "v": "1", "q": "1"}

    # control
    async def drop(self) -> None:
        """Every stream connection dies without a close frame (the venue's side just goes away)."""
        for sock in list(self.sockets):
            transport = sock["request"].transport
            if transport is not None:
                transport.abort()

    def silence(self) -> None:
        """Every open stream connection stops sending (pings are still answered)."""
        for sock in self.sockets:
            sock["silent"] = True

    async def inject(self, stream: str, message: Any) -> None:
        for sock in self.sockets:
            if stream in sock["streams"]:
                await sock["ws"].send_str(json.dumps(message))

    # server
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/fapi/v1/klines", self.klines)
        app.router.add_get("/fapi/v1/aggTrades", self.agg_trades)
        app.router.add_get("/fapi/v1/ticker/24hr", self.ticker_rest)
        app.router.add_get("/fapi/v1/premiumIndex", self.premium_index)
        app.router.add_get("/fapi/v1/fundingInfo", self.funding_info)
        app.router.add_route("POST", "/fapi/v1/listenKey", self.listen_key)
        app.router.add_route("PUT", "/fapi/v1/listenKey", self.listen_key)
        app.router.add_get("/fapi/v1/openOrders", self.open_orders)
        app.router.add_get("/fapi/v1/order", self.order)
        app.router.add_get("/fapi/v1/userTrades", self.my_trades)
        app.router.add_get("/fapi/v3/positionRisk", self.position_risk)
        app.router.add_get("/fapi/v1/leverageBracket", self.leverage_bracket)
        app.router.add_get("/fapi/v3/account", self.account)
        app.router.add_route("*", "/{tail:.*}", self.other)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        for sock in list(self.sockets):
            with contextlib.suppress(Exception):
                await sock["ws"].close()
        if self.runner is not None:
            await self.runner.cleanup()

    def venue_config(self) -> CcxtVenueConfig:
        url = f"127.0.0.1:{self.port}"
        return CcxtVenueConfig(exchange=VENUE, rest_url=f"http://{url}", ws_url=f"ws://{url}", markets_file=MARKETS)

    async def klines(self, request: web.Request) -> web.Response:
        self.requests["klines"] += 1
        q, now = request.query, self.now()
        start = int(q.get("startTime", now - 500 * MIN))
        end = int(q.get("endTime", now))
        limit = int(q.get("limit", 500))
        first = -(-(start - self.t0) // MIN)
        rows = []
        for i in range(first, first + limit):
            open_time = self.t0 + i * MIN
            if open_time > min(end, now):
                break
            rows.append(self.row(i, now))
        return web.json_response(rows)

    async def agg_trades(self, request: web.Request) -> web.Response:
        self.requests["aggTrades"] += 1
        q, now = request.query, self.now()
        start, end = int(q["startTime"]), min(int(q.get("endTime", now)), now)
        limit = int(q.get("limit", 500))
        out = []
        for i in range((start - self.t0) // MIN, (end - self.t0) // MIN + 1):
            out += [t for t in trades_of(i, self.t0) if start <= t["T"] <= end]
        return web.json_response([{**t, "f": t["a"], "l": t["a"]} for t in out[:limit]])

    async def ticker_rest(self, request: web.Request) -> web.Response:
        now = self.now()
        return web.json_response(self.ticker(now, int(self.row(self.minute_now(), now)[4].replace(".", ""))))

    async def premium_index(self, request: web.Request) -> web.Response:
        self.requests["premiumIndex"] += 1
        now = self.now()
        return web.json_response(
            {"symbol": "BTCUSDT", "markPrice": "60000.1", "indexPrice": "60000.0", "estimatedSettlePrice": "60000.0",
             "lastFundingRate": self.funding, "interestRate": "0.0001", "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000, "time": now}
        )  # fmt: skip

    async def funding_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"symbol": "BTCUSDT", "adjustedFundingRateCap": "0.02", "adjustedFundingRateFloor": "-0.02", "fundingIntervalHours": 4}]
        )

    async def other(self, request: web.Request) -> web.StreamResponse:
        if "/ws" in request.path:
            if time.monotonic() < self.refuse_until:
                self.requests["ws refused"] += 1
                return web.Response(status=503, text="down for maintenance")
            return await self.stream(request)
        self.requests[f"unknown {request.method} {request.path}"] += 1
        return web.json_response({"code": -1, "msg": f"no route {request.path}"}, status=404)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.requests["ws"] += 1
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        private = request.path.startswith("/private")  # the user data stream: /private/ws?listenKey=...
        sock: dict[str, Any] = {"ws": ws, "request": request, "streams": set(), "after": self.now(), "silent": False, "private": private}
        self.sockets.append(sock)
        pusher = asyncio.create_task(self.push(sock))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                body = json.loads(msg.data)
                if body.get("method") == "SUBSCRIBE":
                    self.requests.update(f"subscribe {p}" for p in body["params"])
                    sock["after"] = max(sock["after"], self.now()) if not sock["streams"] else sock["after"]
                    sock["streams"] |= set(body["params"])
                    await ws.send_str(json.dumps({"result": None, "id": body["id"]}))
        finally:
            pusher.cancel()
            self.sockets.remove(sock)
        return ws

    # the account
    def rest_order(self, o: dict[str, Any]) -> dict[str, Any]:
        return {
            "orderId": o["id"], "symbol": "BTCUSDT", "status": o["status"], "clientOrderId": o["cid"], "price": o["price"],
            "avgPrice": o["price"] if o["filled"] != "0" else "0", "origQty": o["qty"], "executedQty": o["filled"], "cumQuote": "0",
            "timeInForce": "GTC", "type": "LIMIT", "reduceOnly": False, "side": "BUY", "positionSide": "BOTH", "origType": "LIMIT",
            "time": o["time"], "updateTime": o["updated"],
        }  # fmt: skip

    def order_update(self, o: dict[str, Any], execution: str) -> dict[str, Any]:
        t = self.now()
        body = {
            "s": "BTCUSDT", "c": o["cid"], "S": "BUY", "o": "LIMIT", "f": "GTC", "q": o["qty"], "p": o["price"], "ap": "0", "sp": "0",
            "x": execution, "X": o["status"], "i": o["id"], "l": "0", "z": o["filled"], "L": "0", "n": "0", "N": "USDT", "T": t,
            "t": 0, "b": "0", "a": "0", "m": False, "R": False, "wt": "CONTRACT_PRICE", "ot": "LIMIT", "ps": "BOTH", "cp": False,
            "rp": "0", "pP": False, "si": 0, "ss": 0,
        }  # fmt: skip
        return {"e": "ORDER_TRADE_UPDATE", "E": t, "T": t, "o": body}

    async def place(self, order_id: int, cid: str, price: str, qty: str, *, push: bool) -> None:
        t = self.now()
        o = {"id": order_id, "cid": cid, "price": price, "qty": qty, "filled": "0", "status": "NEW", "time": t, "updated": t}
        self.orders[order_id] = o
        if push:
            await self.push_private(self.order_update(o, "NEW"))

    def fill(self, order_id: int, trade_id: int) -> None:
        """The order fills completely while nobody listens: only REST can tell."""
        o, t = self.orders[order_id], self.now()
        o.update(status="FILLED", filled=o["qty"], updated=t)
        self.user_trades.append(
            {"symbol": "BTCUSDT", "id": trade_id, "orderId": order_id, "side": "BUY", "price": o["price"], "qty": o["qty"],
             "realizedPnl": "0", "marginAsset": "USDT", "quoteQty": "0", "commission": "0.01200000", "commissionAsset": "USDT",
             "time": t, "positionSide": "BOTH", "maker": True, "buyer": True}
        )  # fmt: skip
        amount = Decimal(self.position[0]) + Decimal(o["qty"])
        self.position = (f"{amount:.3f}", "59500.0", t)
        self.wallet = "999.98800000"

    async def push_private(self, message: dict[str, Any]) -> None:
        for sock in self.sockets:
            if sock["private"]:
                await sock["ws"].send_str(json.dumps(message))

    async def drop_private(self) -> None:
        for sock in list(self.sockets):
            if sock["private"] and sock["request"].transport is not None:
                sock["request"].transport.abort()

    async def listen_key(self, request: web.Request) -> web.Response:
        self.requests[f"listenKey {request.method}"] += 1
        return web.json_response({"listenKey": "lk1"})

    async def open_orders(self, request: web.Request) -> web.Response:
        self.requests["openOrders"] += 1
        return web.json_response([self.rest_order(o) for o in self.orders.values() if o["status"] == "NEW"])

    async def order(self, request: web.Request) -> web.Response:
        self.requests["order"] += 1
        o = self.orders.get(int(request.query.get("orderId", 0)))
        if o is None:
            return web.json_response({"code": -2013, "msg": "Order does not exist."}, status=400)
        return web.json_response(self.rest_order(o))

    async def my_trades(self, request: web.Request) -> web.Response:
        self.requests["userTrades"] += 1
        start = int(request.query.get("startTime", 0))
        return web.json_response([t for t in self.user_trades if t["time"] >= start])

    async def position_risk(self, request: web.Request) -> web.Response:
        self.requests["positionRisk"] += 1
        amount, entry, updated = self.position
        return web.json_response(
            [{"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": amount, "entryPrice": entry, "breakEvenPrice": entry,
              "markPrice": "60000.0", "unRealizedProfit": "0.00000000", "liquidationPrice": "0", "isolatedMargin": "0", "notional": "600.0",
              "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "6.0", "maintMargin": "2.4", "positionInitialMargin": "6.0",
              "openOrderInitialMargin": "0", "adl": "2", "bidNotional": "0", "askNotional": "0", "updateTime": updated}]
        )  # fmt: skip

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        brackets = [{"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}]
        return web.json_response([{"symbol": "BTCUSDT", "notionalCoef": 1.0, "brackets": brackets}])

    async def account(self, request: web.Request) -> web.Response:
        self.requests["account"] += 1
        w = self.wallet
        asset = {"asset": "USDT", "walletBalance": w, "unrealizedProfit": "0.00000000", "marginBalance": w, "maintMargin": "0.00000000",
                 "initialMargin": "0.00000000", "positionInitialMargin": "0.00000000", "openOrderInitialMargin": "0.00000000",
                 "maxWithdrawAmount": w, "crossWalletBalance": w, "crossUnPnl": "0.00000000", "availableBalance": w,
                 "marginAvailable": True, "updateTime": 1701270042059}  # fmt: skip
        return web.json_response(
            {"feeTier": "0", "canTrade": True, "canDeposit": True, "canWithdraw": True, "tradeGroupId": "-1", "updateTime": "0",
             "multiAssetsMargin": False, "totalWalletBalance": w, "totalUnrealizedProfit": "0", "totalMarginBalance": w,
             "availableBalance": w, "maxWithdrawAmount": w, "assets": [asset], "positions": []}
        )  # fmt: skip

    async def push(self, sock: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await asyncio.sleep(self.minute_s / 8)
                now = self.now()
                if sock["silent"] or not sock["streams"]:
                    continue
                for _, message in self.events_between(sock["streams"], sock["after"], now):
                    await sock["ws"].send_str(json.dumps(message))
                sock["after"] = now


# ----------------------------------------------------------------------------- harness


@pytest.fixture
async def venue() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    await server.start()
    yield server
    await server.stop()


def config(**overrides: Any) -> PublisherConfig:
    base: dict[str, Any] = {
        "venue": VENUE,
        "symbols": [SYMBOL],
        "feeds": ["candles", "tickers", "trades", "funding"],
        "expected_ms": {"candles": 60, "tickers": 60, "trades": 60},
        "silence_multiple": 6,
        "poll_ms": {"funding": 200},
        "history_candles": 5,
        "reconnect_first_ms": 50,
        "reconnect_max_ms": 400,
    }
    return PublisherConfig(**(base | overrides))


@contextlib.asynccontextmanager
async def publishing(nc: Client, server: FakeBinance, cfg: PublisherConfig) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_publisher(BusSettings(nats_url=_url(nc)), server.venue_config(), cfg, stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _url(nc: Client) -> str:
    assert nc.connected_url is not None
    return f"nats://{nc.connected_url.netloc}"


async def stored(nc: Client, stream: str = "MARKET") -> list[Any]:
    out = []
    async for batch in read_stream(nc, stream, url=_url(nc)):
        out += [decode(m.data) for m in batch]
    return out


def closed_candles(events: list[Any]) -> list[Candle]:
    return [e for e in events if isinstance(e, Candle) and e.closed]


async def until_minutes(server: FakeBinance, n: int) -> None:
    target = server.minute_now() + n
    await eventually(lambda: server.minute_now() >= target, timeout=30, what=f"{n} venue minutes")


def check_exactly_once(candles: list[Candle], server: FakeBinance) -> list[int]:
    """Every minute between the first and the last closed candle appears once, with its true values."""
    minutes = [(c.open_time - server.t0) // MIN for c in candles]
    counts = Counter(minutes)
    doubled = sorted(m for m, n in counts.items() if n > 1)
    assert not doubled, f"minutes published closed twice: {doubled}"
    missing = sorted(set(range(min(minutes), max(minutes) + 1)) - set(minutes))
    assert not missing, f"closed minutes missing: {missing}"
    for c in candles:
        i = (c.open_time - server.t0) // MIN
        o, h, lo, cl, v = minute_values(i)
        assert (c.open, c.high, c.low, c.close, c.volume) == (
            Decimal(tenths(o)),
            Decimal(tenths(h)),
            Decimal(tenths(lo)),
            Decimal(tenths(cl)),
            Decimal(thousandths(v)),
        ), f"minute {i}"
        assert c.ts == c.open_time + MIN - 1
        assert c.id == ids.candle_id(VENUE, SYMBOL, "1m", c.open_time, c.ts, True)
    return sorted(minutes)


def gap_pairs(events: list[Any], stream: str) -> list[tuple[GapMarker, GapMarker]]:
    """The gap markers of one stream as (opened, ended) pairs: every gap that opened has ended.

    A loaded machine may stall the loop past the watchdog's limit once more; that is a gap too,
    so the tests look for the one they caused rather than count them."""
    gaps = [e for e in events if isinstance(e, GapMarker) and e.stream == stream]
    assert gaps and len(gaps) % 2 == 0, gaps
    pairs = list(zip(gaps[::2], gaps[1::2]))
    for opened, ended in pairs:
        assert opened.since == ended.since and opened.until < ended.until, (opened, ended)
        assert opened.reason.endswith("repairing") and "repaired" in ended.reason
    return pairs


def check_trades_once(trades: list[Trade], server: FakeBinance) -> None:
    agg = [int(t.trade_id) for t in trades]
    doubled = sorted(a for a, n in Counter(agg).items() if n > 1)
    assert not doubled, f"trades published twice: {doubled}"
    missing = sorted(set(range(min(agg), max(agg) + 1)) - set(agg))
    assert not missing, f"trades missing: {missing}"


# ----------------------------------------------------------------------------- tests


@pytest.mark.e2e
async def test_streamed_candles_trades_tickers_and_polled_funding_reach_the_market_stream_as_our_events(
    bus: Client, venue: FakeBinance
) -> None:
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 8)
    events = await stored(bus)
    candles = closed_candles(events)
    minutes = check_exactly_once(candles, venue)
    assert minutes[0] == venue.first_minute - 5, "the first start fetches `history_candles` closed candles first"
    assert len(minutes) >= 12
    forming = [e for e in events if isinstance(e, Candle) and not e.closed]
    assert forming and all(c.open_time <= c.ts < c.open_time + MIN for c in forming)

    trades = [e for e in events if isinstance(e, Trade)]
    check_trades_once(trades, venue)
    first = trades[0]
    i = (first.ts - venue.t0) // MIN
    truth = next(t for t in trades_of(i, venue.t0) if t["a"] == int(first.trade_id))
    assert (first.price, first.amount, first.ts) == (Decimal(truth["p"]), Decimal(truth["q"]), truth["T"])
    assert first.side == ("sell" if truth["m"] else "buy")
    assert first.id == ids.trade_id(VENUE, SYMBOL, first.trade_id)

    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) > 10, venue.requests
    assert all(t.id == ids.ticker_id(VENUE, SYMBOL, t.ts) for t in tickers)
    minute = (tickers[-1].ts - venue.t0) // MIN
    assert tickers[-1].last == Decimal(tenths(partial_values(minute, ((tickers[-1].ts - venue.t0) % MIN) // 15_000)[3]))

    funding = [e for e in events if isinstance(e, FundingRate)]
    assert funding and funding[0].funding_rate == Decimal("0.0001") and funding[0].interval == "4h"
    assert not [e for e in events if isinstance(e, GapMarker)], "a first start is not a gap"
    assert not [k for k in venue.requests if k.startswith("unknown")], venue.requests


@pytest.mark.e2e
async def test_a_dropped_connection_is_reconnected_marked_as_a_gap_and_backfilled_with_no_candle_missing_or_doubled(
    bus: Client, venue: FakeBinance
) -> None:
    before = metrics.RECONNECTS.labels(VENUE, "candles", "disconnect")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
        venue.refuse_until = time.monotonic() + 0.5  # five venue minutes without a stream
        klines_before = venue.requests["klines"]
        await venue.drop()
        await until_minutes(venue, 6)
        await eventually(lambda: venue.requests["klines"] > klines_before, what="the REST backfill")
        await until_minutes(venue, 4)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    pairs = gap_pairs(events, "candle1m")
    opened, ended = next((o, e) for o, e in pairs if "connection lost" in o.reason)
    assert opened.since < opened.until < ended.until and opened.backfilled == 0
    assert ended.backfilled >= 1 and "closed candles fetched" in ended.reason
    assert metrics.RECONNECTS.labels(VENUE, "candles", "disconnect")._value.get() > before


@pytest.mark.e2e
async def test_a_stream_that_goes_silent_without_closing_is_detected_reconnected_reported_and_backfilled(
    bus: Client, venue: FakeBinance
) -> None:
    before = metrics.RECONNECTS.labels(VENUE, "candles", "silence")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
        sockets = venue.requests["ws"]
        venue.silence()  # the sockets stay open and answer pings; nothing else arrives
        await eventually(lambda: venue.requests["ws"] > sockets, what="a reconnect after the silence")
        await until_minutes(venue, 5)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    opened, ended = next((o, e) for o, e in gap_pairs(events, "candle1m") if "silent for" in o.reason)
    assert opened.since < opened.until < ended.until and ended.backfilled >= 1
    assert metrics.RECONNECTS.labels(VENUE, "candles", "silence")._value.get() > before
    assert {e.stream for e in events if isinstance(e, GapMarker)} >= {"candle1m", "trade", "ticker"}


@pytest.mark.e2e
async def test_a_venue_message_that_fails_parsing_or_sanity_is_counted_and_not_published_and_the_loop_goes_on(
    bus: Client, venue: FakeBinance
) -> None:
    def refused(reason: str) -> float:
        return metrics.REJECTED.labels(VENUE, "trades", reason)._value.get()

    parse_before, sanity_before = refused("parse"), refused("sanity")
    tickers_before = metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 3)
        t = venue.now()
        bad = {"e": "aggTrade", "E": t, "s": "BTCUSDT", "f": 1, "l": 1, "T": t, "m": False, "q": "0.010"}
        await venue.inject("btcusdt@aggTrade", {**bad, "a": 7, "p": "0"})  # not a price: the schema refuses it
        await venue.inject("btcusdt@aggTrade", {**bad, "a": 8, "p": "999999999.0"})  # 16,000x the last: garbage
        await eventually(lambda: refused("parse") > parse_before and refused("sanity") > sanity_before, what="the refusals")

        async def garbage_ticker_refused() -> bool:
            # ccxt hands over the latest ticker only: one overtaken before the loop asks is never seen.
            await venue.inject("btcusdt@miniTicker", {**venue.mini_ticker(venue.now(), 1), "c": "-5"})
            return bool(metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get() > tickers_before)

        await eventually(garbage_ticker_refused, interval=0.05, what="the refused ticker")
        await until_minutes(venue, 3)
    events = await stored(bus)
    trades = [e for e in events if isinstance(e, Trade)]
    assert not [e for e in trades if e.trade_id in ("7", "8")]
    assert max(e.ts for e in trades) > t + 2 * MIN, "trades after the garbage were published"
    check_exactly_once(closed_candles(events), venue)
    assert metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get() > tickers_before
    assert not [e for e in events if isinstance(e, Ticker) and e.last < 0]


@pytest.mark.e2e
async def test_a_lost_user_data_stream_is_marked_and_the_account_is_refetched_publishing_only_what_changed_with_deterministic_ids(
    bus: Client, venue: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQT_BINANCEUSDM_API_KEY", "key")
    monkeypatch.setenv("SQT_BINANCEUSDM_SECRET", "secret")
    await venue.place(101, "grid1-a", "59500.0", "0.010", push=False)
    cfg = config(account="main", feeds=["orders", "fills", "positions", "balances"], fills_lookback_ms=4 * 86_400_000)

    async def account_events() -> list[Any]:
        return await stored(bus, "ACCOUNT")

    async def has(predicate: Callable[[list[Any]], bool]) -> bool:
        return predicate(await account_events())

    def orders(events: list[Any], cid: str, status: str) -> list[OrderUpdate]:
        return [e for e in events if isinstance(e, OrderUpdate) and e.client_order_id == cid and e.status == status]

    async with publishing(bus, venue, cfg):
        # The start fetches the account once: the resting order, the position, the balance.
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1-a", "open"))), what="the open order from the first fetch")
        await eventually(lambda: has(lambda ev: any(isinstance(e, Balance) for e in ev)), what="the balance")
        await eventually(lambda: venue.requests["ws"] >= 1, what="the user data stream")
        # Streamed: a new order, straight from ORDER_TRADE_UPDATE.
        await venue.place(102, "grid1-b", "59000.0", "0.010", push=True)
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1-b", "open"))), what="the streamed order")
        # The stream dies; while it is down the first order fills. Only REST can tell.
        fetched = venue.requests["openOrders"]
        venue.refuse_until = time.monotonic() + 0.3
        await venue.drop_private()
        venue.fill(101, trade_id=9001)
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1-a", "closed"))), what="the fill found by the re-fetch")
        await eventually(
            lambda: has(lambda ev: len([e for e in ev if isinstance(e, GapMarker) and "repaired" in e.reason]) >= 1),
            what="the end of the gap",
        )
        assert venue.requests["openOrders"] > fetched
    events = await account_events()
    closed = orders(events, "grid1-a", "closed")
    assert len(closed) == 1 and closed[0].id == ids.order_event_id(VENUE, "main", "grid1-a", "closed", Decimal("0.01"))
    assert closed[0].filled == Decimal("0.01") and closed[0].order_id == "101"
    fills = [e for e in events if isinstance(e, Fill)]
    assert len(fills) == 1 and fills[0].id == ids.fill_id(VENUE, "main", "9001") and fills[0].client_order_id == "grid1-a"
    positions = [e for e in events if isinstance(e, Position)]
    assert [p.contracts for p in positions] == [Decimal("0.01"), Decimal("0.02")], "the position once per state"
    balances = [e for e in events if isinstance(e, Balance) and e.asset == "USDT"]
    assert [b.total for b in balances] == [Decimal("1000"), Decimal("999.988")]
    assert len(orders(events, "grid1-a", "open")) == 1 and len(orders(events, "grid1-b", "open")) == 1, "nothing published twice"
    gaps = [e for e in events if isinstance(e, GapMarker)]
    assert gaps and all(g.account == "main" and g.symbol == SYMBOL for g in gaps)
    ended = [g for g in gaps if "repaired" in g.reason]
    assert ended and max(g.backfilled for g in ended) >= 4  # the order's end, the fill, the position, the balance
    assert {g.stream for g in gaps} <= {"order", "fill", "position", "balance"}


# ----------------------------------------------------------------------------- the decisions alone


def test_a_candle_is_closed_by_a_later_row_and_a_hole_is_filled_from_rest_once() -> None:
    track = CandleTrack(MIN, last_closed=None, history=2)
    steps = track.take([[10 * MIN, 1, 2, 0.5, 1.5, 3]])
    assert [(s.kind, s.start, s.end) for s in steps] == [("fill", 8 * MIN, 10 * MIN), ("partial", 0, 0)]
    assert track.filled([[8 * MIN, 1, 1, 1, 1, 1], [9 * MIN, 1, 1, 1, 1, 1], [10 * MIN, 1, 1, 1, 1, 1]], 8 * MIN, 10 * MIN) == [
        [8 * MIN, 1, 1, 1, 1, 1],
        [9 * MIN, 1, 1, 1, 1, 1],
    ]
    assert [s.kind for s in track.take([[10 * MIN, 1, 2, 0.5, 1.6, 4], [11 * MIN, 2, 2, 2, 2, 1]])] == ["partial", "closed", "partial"]
    assert track.last_closed == 10 * MIN
    # A skipped minute on a live stream is a hole too; an old minute again is ignored.
    steps = track.take([[9 * MIN, 1, 1, 1, 1, 1], [13 * MIN, 1, 1, 1, 1, 1]])
    assert [(s.kind, s.start // MIN, s.end // MIN) for s in steps] == [("closed", 0, 0), ("fill", 12, 13), ("partial", 0, 0)]
    # After an interruption the forming candle is not closed from its stale row; only the newest
    # row of the first delivery is trusted, the rest is fetched.
    track.resume()
    steps = track.take([[13 * MIN, 9, 9, 9, 9, 9], [16 * MIN, 1, 1, 1, 1, 1]])
    assert [(s.kind, s.start // MIN, s.end // MIN) for s in steps] == [("fill", 12, 16), ("partial", 0, 0)]


def test_trades_seen_are_not_published_again_and_the_hole_runs_from_the_last_trade() -> None:
    track = TradeTrack()
    first = [{"id": "1", "timestamp": 100}, {"id": "2", "timestamp": 200}]
    assert track.fresh(first) == first and track.last_ts == 200
    assert track.fresh([{"id": "2", "timestamp": 200}, {"id": "3", "timestamp": 300}]) == [{"id": "3", "timestamp": 300}]
    assert track.hole([{"id": "9", "timestamp": 900}]) == (300, 900)


def test_the_account_book_publishes_changes_only_and_never_moves_an_order_back() -> None:
    book = AccountBook()

    def order(status: OrderStatus, filled: str) -> OrderUpdate:
        return OrderUpdate(
            id="x", venue=VENUE, account="main", symbol=SYMBOL, order_id="1", client_order_id="c", side="buy", order_type="limit",
            price=Decimal(1), amount=Decimal(1), filled=Decimal(filled), remaining=Decimal(0), status=status, ts=1, ts_local=1,
        )  # fmt: skip

    assert book.order_changed(order("open", "0"))
    assert not book.order_changed(order("open", "0.0"))
    assert book.order_changed(order("closed", "1"))
    assert not book.order_changed(order("open", "0")), "a fetch crossing a newer stream event"
    assert book.vanished(SYMBOL, []) == [] and book.client_ids["1"] == "c"


def test_gap_markers_open_and_end_with_ids_that_never_collide() -> None:
    gap = open_gap("candle1m", SYMBOL, None, since=1_000, now=900, reason="silent")
    opened = open_marker(VENUE, gap, ts_local=5)
    ended = end_marker(VENUE, gap, first_after=1_000, backfilled=3, detail="3 of 3 closed candles fetched", ts_local=6)
    assert (opened.since, opened.until, ended.until) == (1_000, 1_000, 1_001)
    assert opened.id != ended.id and ended.backfilled == 3 and ended.reason.startswith("silent; repaired")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"symbols": []}, "`symbols`"),
        ({"symbols": ["BTCUSDT"]}, "`symbols[0]`"),
        ({"feeds": ["candles", "book"]}, "`feeds[1]`"),
        ({"expected_ms": {"candle": 5}}, "`expected_ms.candle`"),
        ({"poll_ms": {"funding": 0}}, "`poll_ms.funding`"),
        ({"silence_multiple": 1}, "`silence_multiple`"),
        ({"candle_interval": "2m"}, "`candle_interval`"),
        ({"account": "Main"}, "account"),
    ],
)
def test_a_bad_config_names_its_key(overrides: dict[str, Any], key: str) -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match=key.replace("[", r"\[").replace("]", r"\]")):
        msgspec.convert({"symbols": [SYMBOL]} | overrides, PublisherConfig)


@pytest.mark.e2e
async def test_a_restarted_publisher_resumes_from_what_the_stream_holds_with_a_gap_and_no_candle_twice(
    bus: Client, venue: FakeBinance
) -> None:
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 3)
    await until_minutes(venue, 4)  # the publisher is down for four venue minutes
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    opened, ended = gap_pairs(events, "candle1m")[0]
    assert opened.reason.startswith("publisher restarted") and ended.backfilled >= 3
    assert gap_pairs(events, "trade")[0][1].backfilled >= 6
