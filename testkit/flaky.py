"""The grid, the real executor and the simulated exchange's engine in one loop, with a venue that
loses answers and delays requests exactly when a test says so.

No bus: the loop plays it. Commands the grid decides go to the executor's `handle`; a command
that ends in `RetryLater` comes back later as a redelivery (`delivered=2`), after the wall clock
moved on; events (the executor's reports and the venue's own private stream) reach the grid once
per id, as JetStream's deduplication would have it. The venue is the engine, reached through
`FlakyVenue`, whose script can make a create time out after it was applied (it landed, nobody
heard), time out before it was applied and land later (a request stuck in a queue), or hold a
cancel back until after the next print. At every quiet moment the test compares the grid with
the venue: same position, same fills, no client id placed twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bus.contract import Inbound
from bus.errors import RetryLater
from executors.config import ExecutorConfig
from executors.executor import Executor
from schemas.account import Fill, OrderUpdate
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.lattice import client_prefix
from strategies.grid.state import GridState
from testkit.grid import SYMBOL, T0, sim_config
from testkit.venue import ScriptedBreakers
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.protocol import OrderRequest
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Cancel, Place, Print, Quote, Tick

TICK_MS = 500


@dataclass
class Script:
    """What goes wrong, by client order id (or for the next commands of a kind)."""

    lost_answer: set[str] = field(default_factory=set)  # applied, then the answer is lost (timeout)
    land_later: dict[str, int] = field(default_factory=dict)  # not applied now: lands after N ticks
    slow_cancel: set[str] = field(default_factory=set)  # the cancel is applied only after the next print
    down_until: int = 0  # every call times out while the loop's step is below this
    outage_after_stuck: int = 0  # a stuck create is followed by an outage of this many prints


class FlakyVenue:
    """The Venue protocol over the engine, misbehaving as scripted."""

    name, account = "sim", "main"

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.script = Script()
        self.creates: dict[str, int] = {}  # client id -> create requests that reached the engine

    async def markets(self) -> dict[str, Market]:
        return self.loop.engine.markets

    def _reachable(self, what: str) -> None:
        if self.loop.step_no < self.script.down_until:
            raise Transient(f"{what}: the venue is unreachable")

    async def now_ms(self, fresh: bool = False) -> int:
        self._reachable("time")
        return self.loop.est.ts

    async def create_order(self, request: OrderRequest) -> OrderUpdate:
        cid = request.client_order_id
        if cid in self.script.land_later:
            ticks = self.script.land_later.pop(cid)
            self.loop.later.append((self.loop.step_no + ticks, Place(account="main", order=request)))
            self.script.down_until = max(self.script.down_until, self.loop.step_no + self.script.outage_after_stuck)
            raise Transient(f"create of {cid} timed out (it is stuck on its way)")
        self._reachable("create")
        known = self.loop.engine.order_view(self.loop.est, "main", cid, None)
        if known is not None:
            raise DuplicateOrder(f"client order id {cid} already used", existing=known)
        self.creates[cid] = self.creates.get(cid, 0) + 1
        self.loop.venue_apply(Place(account="main", order=request))
        order = self.loop.engine.order_view(self.loop.est, "main", cid, None)
        assert order is not None
        if cid in self.script.lost_answer:
            self.script.lost_answer.discard(cid)
            raise Transient(f"create of {cid} timed out (it landed)")
        if order.status == "rejected":
            raise OrderRejected(order.message or "rejected", order.reason)
        return order

    async def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        assert client_order_id is not None
        self._reachable("cancel")
        entry = Cancel(account="main", symbol=symbol, client_order_id=client_order_id)
        if client_order_id in self.script.slow_cancel:
            self.script.slow_cancel.discard(client_order_id)
            self.loop.later.append((self.loop.step_no + 1, entry))
            raise Transient(f"cancel of {client_order_id} timed out (it is on its way)")
        self.loop.venue_apply(entry)
        return await self.fetch_order(symbol, client_order_id=client_order_id)

    async def fetch_order(self, symbol: str, *, client_order_id: str | None = None, order_id: str | None = None) -> OrderUpdate:
        self._reachable("fetch")
        order = self.loop.engine.order_view(self.loop.est, "main", client_order_id, order_id)
        if order is None:
            raise OrderNotFound(f"no order {client_order_id}")
        return order

    async def close(self) -> None:
        return None


class Loop:
    def __init__(self, grid: GridConfig, config: ExecutorConfig | None = None) -> None:
        self.engine = SimEngine(sim_config())
        self.est: EngineState = self.engine.initial_state()
        self.core = GridCore(grid, self.engine.markets[grid.symbol])
        self.gst: GridState = self.core.initial_state()
        self.prefix = client_prefix(grid.instance)
        self.venue = FlakyVenue(self)
        self.wall_ms = T0  # the executor's clock; the venue's moves with its prints
        self.executor = Executor(
            self.venue,  # type: ignore[arg-type]
            ScriptedBreakers(),  # type: ignore[arg-type]
            config or ExecutorConfig(retries=1, backoff_ms=1, backoff_max_ms=1),
            _nothing,
            clock=lambda: self.wall_ms / 1000,
            sleep=_no_sleep,
        )
        self.step_no = 0
        self.eseq = self.gseq = self.cseq = 0
        self.seen: set[str] = set()  # event ids the grid has had (JetStream's dedupe)
        self.commands: deque[tuple[Any, int, int]] = deque()  # (command, seq, stored ms) not yet acked
        self.attempted: set[int] = set()  # command sequences handed to the executor before
        self.later: list[tuple[int, Any]] = []  # (at step, entry) requests stuck on their way
        self.venue_fills = 0

    # ------------------------------------------------------------------ the venue side

    def venue_apply(self, entry: Any) -> None:
        self.eseq += 1
        self.est, events = self.engine.step(self.est, Inbound(self.eseq, "journal", entry))
        self.venue_fills += sum(1 for e in events if isinstance(e, Fill))
        self.deliver([e for e in events if isinstance(e, OrderUpdate)])

    def tick(self, price: str) -> None:
        self.step_no += 1
        ts = T0 + self.step_no * TICK_MS
        self.wall_ms = max(self.wall_ms, ts)
        self.venue_apply(Tick(step=self.step_no, ts=ts, prints=[Print(SYMBOL, Decimal(price), Decimal(1000))]))
        self.eseq += 1
        self.est, md = self.engine.step(self.est, Inbound(self.eseq, "journal", Quote(step=self.step_no)))
        due = [e for at, e in self.later if at <= self.step_no]
        self.later = [(at, e) for at, e in self.later if at > self.step_no]
        for entry in due:
            self.venue_apply(entry)
        self.deliver([e for e in md if isinstance(e, Ticker)])
        self.run_commands()

    def start(self, snapshot: VenueSnapshot | None = None) -> None:
        self.feed(
            snapshot
            or VenueSnapshot(id="s", component="grid", instance=self.gst.instance, venue="sim", account="main", symbol=SYMBOL, ts=T0)
        )

    # ------------------------------------------------------------------ the bus

    def deliver(self, events: list[Any]) -> None:
        for ev in events:
            if ev.id in self.seen:
                continue  # the same fact published twice is stored once
            self.seen.add(ev.id)
            self.feed(ev)

    def feed(self, event: Any) -> None:
        self.gseq += 1
        self.gst, outputs = self.core.step(self.gst, Inbound(self.gseq, "grid", event))
        for out in outputs:
            if isinstance(out, (PlaceOrder, CancelOrder)):
                self.cseq += 1
                self.commands.append((out, self.cseq, self.wall_ms))

    def run_commands(self) -> None:
        """The executor handles what is stored, in order; what it cannot settle comes back
        (marked as possibly handled before, as the handler runtime marks a redelivery)."""
        while self.commands:
            cmd, seq, stored = self.commands[0]
            inbound = Inbound(seq, "cmd", cmd, stored * 1_000_000, 2 if seq in self.attempted else 1)
            self.attempted.add(seq)
            try:
                outputs = asyncio.run(self.executor.handle(inbound))
            except RetryLater:  # not acked: it, and everything behind it, comes back after the next tick
                return
            self.commands.popleft()
            self.deliver(list(outputs))

    # ------------------------------------------------------------------ facts

    def venue_position(self) -> Decimal:
        pos = self.est.accounts["main"].positions.get(SYMBOL)
        return pos.contracts if pos else Decimal(0)

    def problems(self) -> list[str]:
        out = []
        if GridCore.position(self.gst) != self.venue_position():
            out.append(f"grid position {GridCore.position(self.gst)} != venue {self.venue_position()}")
        twice = {cid: n for cid, n in self.venue.creates.items() if n > 1}
        if twice:
            out.append(f"client ids placed twice: {twice}")
        live = {o.client_order_id for o in self.engine.open_orders(self.est, "main", SYMBOL)}
        tracked = {s.client_order_id for s in self.gst.slots if s.client_order_id} | {s.client_order_id for s in self.gst.strays}
        if not live <= tracked:
            out.append(f"orders resting that the grid does not know of: {sorted(live - tracked)}")
        return out


async def _nothing() -> None:
    return None


async def _no_sleep(_s: float) -> None:
    return None
