"""The line `sqt up` prints every few seconds: the primary market, stream sizes, each grid, each
funding arbitrage, and every risk breaker that is not ok.

It is best effort and never holds anything up: while NATS is down it says so instead of
waiting on requests that cannot be answered, and its subscriptions come back by themselves
when the client reconnects.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from cli.config import Config
from schemas import subjects
from schemas.ops import BreakerChange
from schemas.registry import RegistryChange

STREAMS_SHOWN = ("MARKET", "ACCOUNT", "COMMAND")
GRIDS_ONE_BY_ONE = 6  # more grids than this are summed up in one phrase
INFO_TIMEOUT = 1.0  # seconds per stream_info: the line is late rather than the supervisor


class _Ticker(msgspec.Struct):
    last: str = "?"
    bid: str | None = None
    ask: str | None = None


_ticker = msgspec.json.Decoder(_Ticker)


class MarketWatch:
    """The facts behind the status line: the primary market's ticker and every grid's state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.symbol = config.grids[0].symbol if config.grids else config.sim.markets[0].symbol
        self.ticker: _Ticker | None = None
        self.ticks = 0
        self.grids: dict[str, dict[str, Any]] = {}
        self.arbs: dict[str, str] = {}  # instance -> what it holds and earned, one phrase
        self.breakers: dict[str, str] = {}  # scope -> "halted (feed_stale)", for scopes not ok

    async def start(self, nc: Client) -> None:
        async def on_tick(msg: Msg) -> None:
            self.ticker = _ticker.decode(msg.data)
            self.ticks += 1

        async def on_state(msg: Msg) -> None:
            doc = msgspec.json.decode(msg.data)
            self.grids[doc.get("instance", "?")] = {
                "status": doc.get("status"),
                "open": doc.get("open_orders", 0),
                "fills": doc.get("fills", 0),
                "pnl": doc.get("realized_pnl", "0"),
                "position": doc.get("position", "0"),
            }

        await nc.subscribe(subjects.md(self.config.sim.venue, self.symbol, "ticker"), cb=on_tick)

        async def on_breaker(msg: Msg) -> None:
            try:
                change = msgspec.json.decode(msg.data, type=BreakerChange)
            except msgspec.DecodeError:
                return
            if change.state == "ok":
                self.breakers.pop(change.scope, None)
            else:
                self.breakers[change.scope] = f"{change.state} ({', '.join(t.breaker for t in change.trips) or change.reason})"

        async def on_arb(msg: Msg) -> None:
            doc = msgspec.json.decode(msg.data)
            inner = doc.get("state") or {}
            held = "/".join(str(leg.get("held", "0")) for leg in inner.get("legs", []))
            total = (inner.get("books") or {}).get("total", {})
            apr = (inner.get("spread") or {}).get("net_apr")
            words = [
                str(doc.get("status")),
                f"held {held}",
                f"{inner.get('entries', 0)} entries",
                f"net APR {float(apr) * 100:.1f}%" if apr is not None else "no spread yet",
                f"funding {total.get('funding', '0')}, fees {total.get('fees', '0')}",
            ]
            if inner.get("blocked"):
                words.append(f"blocked: {inner['blocked']}")
            self.arbs[doc.get("instance", "?")] = ", ".join(words)

        async def on_registry(msg: Msg) -> None:
            try:
                change = msgspec.json.decode(msg.data, type=RegistryChange)
            except msgspec.DecodeError:
                return
            if change.record.desired == "removed" and change.record.phase == "done":
                self.grids.pop(change.instance, None)

        await nc.subscribe(subjects.ops("grid", "*", "state"), cb=on_state)
        await nc.subscribe(subjects.registry("grid", "*"), cb=on_registry)
        await nc.subscribe(subjects.ops("arbitrage", "*", "state"), cb=on_arb)
        await nc.subscribe(subjects.ops("risk", "*", "breaker"), cb=on_breaker)

    async def line(self, nc: Client) -> str:
        stamp = time.strftime("%H:%M:%S")
        if not nc.is_connected:
            return f"[{stamp}] NATS unreachable; waiting for it to come back"
        js = nc.jetstream(timeout=INFO_TIMEOUT)
        counts = []
        for name in STREAMS_SHOWN:
            try:
                counts.append(f"{name} {(await js.stream_info(name)).state.messages:,}")
            except Exception:  # noqa: BLE001 - the line is best effort
                counts.append(f"{name} ?")
        t = self.ticker
        market = f"{self.symbol} {t.last} (bid {t.bid} / ask {t.ask})" if t else f"{self.symbol}: waiting for ticks"
        grids = "; ".join([*self.grid_words(), *(f"arbitrage {k}: {v}" for k, v in sorted(self.arbs.items()))])
        risk = "; ".join(f"{scope} {what}" for scope, what in sorted(self.breakers.items())) or "no breaker open"
        return f"[{stamp}] {market} | {', '.join(counts)} msgs" + (f" | {grids}" if grids else "") + f" | risk: {risk}"

    def grid_words(self) -> list[str]:
        """Each grid, or, past a screenful of them, how many are in each status and the totals."""
        if len(self.grids) <= GRIDS_ONE_BY_ONE:
            return [
                f"grid {k}: {v['status']}, {v['open']} open, position {v['position']}, {v['fills']} fills, pnl {v['pnl']}"
                for k, v in sorted(self.grids.items())
            ]
        statuses: dict[str, int] = {}
        for v in self.grids.values():
            statuses[str(v["status"])] = statuses.get(str(v["status"]), 0) + 1
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        opened = sum(int(v["open"] or 0) for v in self.grids.values())
        fills = sum(int(v["fills"] or 0) for v in self.grids.values())
        pnl = sum((Decimal(str(v["pnl"] or 0)) for v in self.grids.values()), Decimal(0))
        return [f"{len(self.grids)} grids ({by_status}): {opened} open, {fills} fills, pnl {pnl} (sqt grid ls)"]


async def print_status_lines(nc: Client, config: Config, stop: asyncio.Event, every: float = 5.0) -> None:
    """Print a status line every `every` seconds until `stop`."""
    watch = MarketWatch(config)
    await watch.start(nc)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except asyncio.TimeoutError:
            pass
        print(await watch.line(nc), flush=True)
