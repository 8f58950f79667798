"""A local Binance USD-M for the ccxt publisher: a WebSocket server speaking its market streams
(kline, aggTrade, 24hrTicker; its user data stream for the account) and an HTTP server answering
its REST paths, for ccxt's real clients (`rest_url` / `ws_url` point them here). Its clock runs
fast (a minute every `minute_s`, three days in the past, so nothing is dated ahead of the bus) and
every candle and trade is a function of its minute, so what MARKET holds can be checked against
the truth. Used by tests/test_publisher_ccxt.py and the `sqt run publisher` test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from testkit.ccxt import write_markets
from venues.ccxt.config import CcxtVenueConfig

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
        self.first_klines_minute: int | None = None
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
        markets = write_markets(VENUE, Path(tempfile.mkdtemp(prefix="sqt-markets-")))  # in tick sizes, as ccxt has them now
        return CcxtVenueConfig(exchange=VENUE, rest_url=f"http://{url}", ws_url=f"ws://{url}", markets_file=str(markets))

    async def klines(self, request: web.Request) -> web.Response:
        self.requests["klines"] += 1
        if self.first_klines_minute is None:
            self.first_klines_minute = self.minute_now()  # when the history was asked for
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
