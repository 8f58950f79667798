"""REST for what the page loads on demand, answered from the gateway's view.

A bad query parameter is a 400 whose JSON names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from aiohttp import web

from gateway.frames import Kline, Market
from gateway.view import View

TIMEFRAMES_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
_encoder = msgspec.json.Encoder(decimal_format="string")


class BadQuery(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"`{name}` {problem}")
        self.name = name


def aggregate(candles: Iterable[Kline], tf: str) -> list[Kline]:
    """1m candles into `tf` bars (aligned to the epoch, UTC): open of the first, close of the
    last, extremes and summed volume; a bar is closed when its last minute is."""
    size = TIMEFRAMES_MS[tf]
    out: list[Kline] = []
    for c in candles:
        start = c.open_time - c.open_time % size
        if out and out[-1].open_time == start:
            b = out[-1]
            last_minute = c.open_time + 60_000 >= start + size
            out[-1] = msgspec.structs.replace(
                b,
                high=max(b.high, c.high),
                low=min(b.low, c.low),
                close=c.close,
                volume=b.volume + c.volume,
                closed=c.closed and last_minute,
                ts=c.ts,
            )
        else:
            single = size == 60_000
            out.append(msgspec.structs.replace(c, interval=tf, open_time=start, closed=c.closed and single))
    return out


def add_routes(app: web.Application, view: View) -> None:
    def route(path: str, answer: Callable[[dict[str, str]], Any]) -> None:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = answer(dict(request.query))
            except BadQuery as exc:
                return web.json_response({"error": str(exc), "parameter": exc.name}, status=400)
            return web.Response(body=_encoder.encode(body), content_type="application/json")

        app.router.add_get(path, handler)

    def market(q: dict[str, str]) -> Market:
        return Market(_text(q, "venue"), _text(q, "symbol"))

    def candles(q: dict[str, str]) -> list[Kline]:
        tf = q.get("tf", "1m")
        if tf not in TIMEFRAMES_MS:
            raise BadQuery("tf", f"must be one of {', '.join(TIMEFRAMES_MS)}")
        start, end = _ms(q, "from", 0), _ms(q, "to", 2**62)
        m = view.markets.get(market(q))
        bars = aggregate(m.candles if m else (), tf)
        return [b for b in bars if start <= b.open_time <= end]

    def orders(q: dict[str, str]) -> list[Any]:
        m = view.markets.get(market(q))
        return sorted(m.orders.values(), key=lambda o: (o.account, o.client_order_id)) if m else []

    def positions(q: dict[str, str]) -> list[Any]:
        venue = _text(q, "venue") if "venue" in q else None
        return [p for mk, m in sorted(view.markets.items()) if venue in (None, mk.venue) for _, p in sorted(m.positions.items())]

    def balances(q: dict[str, str]) -> list[Any]:
        venue = _text(q, "venue") if "venue" in q else None
        return [b for k, b in sorted(view.balances.items()) if venue in (None, k[0])]

    def grid(q: dict[str, str]) -> list[Any]:
        m = view.markets.get(market(q))
        return [g for _, g in sorted(m.grids.items())] if m else []

    def fills(q: dict[str, str]) -> list[Any]:
        limit = _int(q, "limit", 100, 1, 10_000)
        m = view.markets.get(market(q))
        return list(m.fills)[-limit:] if m else []

    from gateway.openapi import openapi  # the description of these routes, from the same code

    document = openapi()
    route("/api/openapi.json", lambda q: document)
    route("/api/markets", lambda q: sorted(view.markets))
    route("/api/candles", candles)
    route("/api/orders", orders)
    route("/api/positions", positions)
    route("/api/balances", balances)
    route("/api/grid", grid)
    route("/api/fills", fills)


def _text(q: dict[str, str], name: str) -> str:
    value = q.get(name, "")
    if not value or len(value) > 64:
        raise BadQuery(name, "must be 1-64 characters")
    return value


def _int(q: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(name, f"must be an integer, not {raw[:32]!r}") from None
    if not low <= value <= high:
        raise BadQuery(name, f"must be between {low} and {high}")
    return value


def _ms(q: dict[str, str], name: str, default: int) -> int:
    return _int(q, name, default, 0, 2**62)
