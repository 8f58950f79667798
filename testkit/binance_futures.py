"""A local HTTP server answering Binance USD-M's REST API in Binance's own payload shapes.

Its order, position and balance bodies are ccxt's recorded Binance futures payloads
(tests/fixtures/ccxt/response/binance.json) with the values of the orders it holds filled in, and
its errors are Binance's own codes; ccxt's real client, pointed here by `[venues.*] rest_url`,
cannot tell it from the venue. It keeps resting orders (no matching) and every request it saw,
so a test can assert what reached the "venue": parameters, cancels, duplicates.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from testkit.ccxt import cases

_ORDER = cases("binance", "fetchOpenOrders")[1]["httpResponse"][0]  # a USD-M order (LTCUSDT)
_POSITION = cases("binance", "fetchPositions")[1]["httpResponse"][0]
_BALANCE = cases("binance", "fetchBalance")[1]["httpResponse"]


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]


@dataclass
class BinanceFutures:
    price: Decimal = Decimal("60000")
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # by clientOrderId
    requests: list[Seen] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(8_000_000_001))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def seen(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.requests if s.method == method and s.path == path]

    async def _dispatch(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        self.requests.append(Seen(request.method, request.path, params))
        route = {
            ("GET", "/fapi/v1/time"): self._time,
            ("GET", "/fapi/v1/klines"): self._klines,
            ("POST", "/fapi/v1/order"): self._create,
            ("DELETE", "/fapi/v1/order"): self._cancel,
            ("GET", "/fapi/v1/order"): self._fetch,
            ("GET", "/fapi/v1/openOrders"): self._open,
            ("DELETE", "/fapi/v1/allOpenOrders"): self._cancel_all,
            ("GET", "/fapi/v2/positionRisk"): self._positions,
            ("GET", "/fapi/v3/positionRisk"): self._positions,
            ("GET", "/fapi/v1/leverageBracket"): self._brackets,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v3/account"): self._account,
        }.get((request.method, request.path))
        if route is None:
            return _error(404, -1000, f"no such endpoint here: {request.method} {request.path}")
        return route(params)

    def _time(self, _params: dict[str, str]) -> web.Response:
        return web.json_response({"serverTime": _now()})

    def _klines(self, params: dict[str, str]) -> web.Response:
        limit = int(params.get("limit", 500))
        minute = _now() // 60_000 * 60_000
        p = str(self.price)
        rows = [[minute - 60_000 * i, p, p, p, p, "1.000", minute - 60_000 * i + 59_999, p, 10, "0", "0", "0"] for i in range(limit)]
        return web.json_response(rows[::-1])

    def _create(self, params: dict[str, str]) -> web.Response:
        cid = params.get("newClientOrderId", "")
        if cid in self.orders:
            return _error(400, -4116, "ClientOrderId is duplicated.")
        order = copy.deepcopy(_ORDER)
        now = str(_now())
        order.update(
            orderId=str(next(self.ids)),
            symbol=params["symbol"],
            clientOrderId=cid,
            price=params.get("price", "0"),
            origQty=params["quantity"],
            side=params["side"],
            type=params["type"],
            origType=params["type"],
            timeInForce=params.get("timeInForce", "GTC"),
            reduceOnly=params.get("reduceOnly") == "true",
            status="NEW",
            time=now,
            updateTime=now,
        )
        self.orders[cid] = order
        return web.json_response(order)

    def _find(self, params: dict[str, str]) -> dict[str, Any] | None:
        cid = params.get("origClientOrderId")
        if cid is not None:
            return self.orders.get(cid)
        return next((o for o in self.orders.values() if o["orderId"] == params.get("orderId")), None)

    def _cancel(self, params: dict[str, str]) -> web.Response:
        order = self._find(params)
        if order is None or order["status"] != "NEW":
            return _error(400, -2011, "Unknown order sent.")
        order.update(status="CANCELED", updateTime=str(_now()))
        return web.json_response(order)

    def _fetch(self, params: dict[str, str]) -> web.Response:
        order = self._find(params)
        return _error(400, -2013, "Order does not exist.") if order is None else web.json_response(order)

    def _open(self, params: dict[str, str]) -> web.Response:
        symbol = params.get("symbol")
        return web.json_response([o for o in self.orders.values() if o["status"] == "NEW" and symbol in (None, o["symbol"])])

    def _cancel_all(self, params: dict[str, str]) -> web.Response:
        for o in self.orders.values():
            if o["status"] == "NEW" and o["symbol"] == params.get("symbol"):
                o.update(status="CANCELED", updateTime=str(_now()))
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    def _positions(self, params: dict[str, str]) -> web.Response:
        flat = copy.deepcopy(_POSITION)
        flat.update(positionAmt="0", entryPrice="0", unRealizedProfit="0", liquidationPrice="0", notional="0", updateTime=str(_now()))
        return web.json_response([flat])

    def _brackets(self, _params: dict[str, str]) -> web.Response:
        # Binance's documented shape; the first tier of BTCUSDT as the recording's options give it.
        tier = {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}
        return web.json_response([{"symbol": "BTCUSDT", "brackets": [tier]}])

    def _account(self, _params: dict[str, str]) -> web.Response:
        return web.json_response(_BALANCE)


def _now() -> int:
    return int(time.time() * 1000)


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)
