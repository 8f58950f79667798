"""Drivers for the grid core: alone (`Driver`, one event at a time), and wired in lock-step to
the simulated exchange's engine without a bus (`Harness`).

Both are pure, so a whole trading session is a function of (configs, price path): tests
drive ticks and check the invariants after each. Commands go to the engine at once, or (with
`latency`) one tick later, so the book can move between a decision and its execution
(post-only rejections, fills racing cancels).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from decimal import Decimal as D
from typing import Any

from bus.contract import Inbound
from schemas import ids
from schemas.account import OrderUpdate
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import StrategyState, VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.core import FULL_EVERY_MS, GridCore
from strategies.grid.lattice import parse_client_order_id
from strategies.grid.state import GridState
from testkit.events import order_update, ticker
from venues.protocol import OrderRequest
from venues.sim.config import SimConfig, SimMarket
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Cancel, Place, Print, Quote, Tick

MARKET = Market(
    symbol="BTC/USDT:USDT",
    kind="swap",
    base="BTC",
    quote="USDT",
    settle="USDT",
    tick_size=D("0.1"),
    lot_size=D("0.001"),
    min_amount=D("0.001"),
    min_notional=D(5),
)
T = 1_700_000_000_000


def grid(**kw: Any) -> GridConfig:
    base: dict[str, Any] = dict(
        instance="g1",
        mode="neutral",
        anchor=D(100),
        spacing=D(10),
        spacing_type="arithmetic",
        levels=2,
        notional=D(1000),
        max_open_orders=8,
    )
    return GridConfig(**(base | kw))


class Driver:
    """Feeds one core and remembers what it decided."""

    def __init__(self, config: GridConfig, market: Market = MARKET, snapshot: VenueSnapshot | None = None, adopt: bool = True) -> None:
        """`adopt`: feed the first start's venue snapshot (`snapshot`, or an empty venue) now."""
        self.core = GridCore(config, market)
        self.state: GridState = self.core.initial_state()
        self.seq = 0
        self.ts = T
        if adopt:
            self.feed(
                snapshot
                or VenueSnapshot(
                    id="s", component="grid", instance=config.instance, venue="sim", account="main", symbol=config.symbol, ts=T
                )
            )

    def feed(self, event: Any) -> list[Any]:
        self.seq += 1
        self.state, out = self.core.step(self.state, Inbound(self.seq, "t", event))
        return out

    def tick(self, price: str, bid: str | None = None, ask: str | None = None) -> list[Any]:
        self.ts += 500
        p = D(price)
        return self.feed(ticker(price, ts=self.ts, bid=D(bid) if bid else p - D("0.1"), ask=D(ask) if ask else p + D("0.1")))

    def order(self, cmd: PlaceOrder, status: str, filled: str = "0", **kw: Any) -> list[Any]:
        self.ts += 1
        return self.feed(
            order_update(
                cmd.client_order_id,
                status,
                filled,
                str(cmd.amount),
                str(cmd.price),
                side=cmd.side,
                ts=self.ts,
                order_id=f"o{cmd.client_order_id}",
                **kw,
            )
        )

    def slot(self, index: int):
        return next((s for s in self.state.slots if s.index == index), None)


def places(out: list[Any]) -> list[PlaceOrder]:
    return [o for o in out if isinstance(o, PlaceOrder)]


def cancels(out: list[Any]) -> list[CancelOrder]:
    return [o for o in out if isinstance(o, CancelOrder)]


SYMBOL = "BTC/USDT:USDT"
T0 = 1_700_000_000_000


def sim_config(start: str = "100", spot: bool = False, **kw: Any) -> SimConfig:
    market = SimMarket(
        symbol="BTC/USDT" if spot else SYMBOL,
        kind="spot" if spot else "swap",
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        min_notional=Decimal(1),
        start_price=Decimal(start),
        maker_fee=Decimal("0.0002"),
        taker_fee=Decimal("0.0005"),
    )
    return SimConfig(
        markets=[market],
        accounts={"main": {"USDT": Decimal(1_000_000), "BTC": Decimal(1_000)}},
        fill_ratio=Decimal(1),
        tick_ms=500,
        **kw,
    )


class Harness:
    def __init__(self, grid: GridConfig, sim: SimConfig, latency: bool = False, full_every_ms: int = FULL_EVERY_MS) -> None:
        """`full_every_ms`: the core's state event policy (`FULL_ALWAYS`: every one full)."""
        self.engine = SimEngine(sim)
        self.est: EngineState = self.engine.initial_state()
        self.market = self.engine.markets[grid.symbol]
        self.core = GridCore(grid, self.market, full_every_ms=full_every_ms)
        self.gst: GridState = self.core.initial_state()
        self.cfg = grid
        self.latency = latency
        self.seq = 0
        self.eseq = 0
        self.step_no = 0
        self.ts = T0
        self.later: deque[Any] = deque()
        self.placed: list[PlaceOrder] = []
        self.canceled: list[CancelOrder] = []
        self.states: list[StrategyState] = []
        self.violations: list[str] = []
        self.inputs: list[Inbound[Any]] = []  # everything the grid saw, in order: a replay's input
        # Inventory one slot's order event moved into another slot or the unassigned position
        # (booking.absorb_dust: a remainder too small to close joins a neighbour), as
        # (from slot, to slot or None for unassigned, amount), and what such moves brought into
        # each slot since it last held nothing: a slot may host dust more than once.
        self.dust_moves: list[tuple[int, int | None, Decimal]] = []
        self.moved_in: dict[int, Decimal] = {}
        self.feed(
            VenueSnapshot(
                id="snapshot", component="grid", instance=grid.instance, venue="sim", account="main", symbol=grid.symbol, ts=self.ts
            )
        )

    # ------------------------------------------------------------------ driving

    def tick(self, price: Decimal | str, volume: Decimal | str = "1000") -> None:
        """One print on the exchange; everything it causes settles before this returns."""
        self.step_no += 1
        self.ts += 500
        queued = list(self.later)
        self.later.clear()
        # The exchange's two halves of a print: its fills settle first, then its market data.
        self._deliver(self._engine(Tick(step=self.step_no, ts=self.ts, prints=[Print(self.cfg.symbol, Decimal(price), Decimal(volume))])))
        self._deliver(self._engine(Quote(step=self.step_no)))
        for cmd in queued:  # commands decided before this print reach the exchange after it
            self._deliver(self._execute(cmd))

    def feed(self, event: Any) -> list[Any]:
        """Give the grid one input; execute what it decides."""
        self.seq += 1
        inbound = Inbound(self.seq, "test", event)
        self.inputs.append(inbound)
        before = self.gst
        self.gst, outputs = self.core.step(self.gst, inbound)
        self._track_moves(event, before, self.gst)
        events: list[Any] = []
        for out in outputs:
            if isinstance(out, StrategyState):
                self.states.append(out)
            elif isinstance(out, (PlaceOrder, CancelOrder, CancelAll)):
                self._check_command(self.gst, out)  # the bid and ask the decision was made with
                if self.latency:
                    self.later.append(out)
                else:
                    events += self._execute(out)
        self._deliver(events)
        return outputs

    def _deliver(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Ticker) and ev.symbol == self.cfg.symbol:
                self.feed(ev)
            elif isinstance(ev, OrderUpdate) and ev.account == "main":
                self.feed(ev)

    def _track_moves(self, event: Any, before: GridState, after: GridState) -> None:
        """Record inventory an order event of one slot put into another slot (or the unassigned
        position): a fill is booked into the slot its client id names, so any other slot that
        grew took it from there."""
        held_before = {s.index: s.holding for s in before.slots}
        held_after = {s.index: s.holding for s in after.slots}
        for index in list(self.moved_in):
            if held_after.get(index, 0) == 0:
                del self.moved_in[index]
        parsed = parse_client_order_id(self.core.prefix, event.client_order_id) if isinstance(event, OrderUpdate) else None
        if parsed is None:
            return
        origin = parsed[1]
        for index, holding in held_after.items():
            was = held_before.get(index, Decimal(0))
            if index != origin and holding * was >= 0 and abs(holding) > abs(was):
                self.dust_moves.append((origin, index, holding - was))
                self.moved_in[index] = self.moved_in.get(index, Decimal(0)) + holding - was
        if after.unassigned != before.unassigned:
            self.dust_moves.append((origin, None, after.unassigned - before.unassigned))

    def _engine(self, entry: Any) -> list[Any]:
        self.eseq += 1
        self.est, events = self.engine.step(self.est, Inbound(self.eseq, "journal", entry))
        return events

    def _execute(self, cmd: Any) -> list[Any]:
        """What the executor does, minus the bus: place or cancel at the exchange."""
        if isinstance(cmd, PlaceOrder):
            self.placed.append(cmd)
            request = OrderRequest(
                symbol=cmd.symbol,
                client_order_id=cmd.client_order_id,
                side=cmd.side,
                amount=cmd.amount,
                price=cmd.price,
                post_only=cmd.post_only,
                reduce_only=cmd.reduce_only,
            )
            return self._engine(Place(account="main", order=request))
        if isinstance(cmd, CancelOrder):
            self.canceled.append(cmd)
            return self._engine(Cancel(account="main", symbol=cmd.symbol, client_order_id=cmd.client_order_id))
        return []

    def _check_command(self, state: GridState, cmd: Any) -> None:
        if isinstance(cmd, PlaceOrder):
            bid, ask = state.bid, state.ask
            if cmd.side == "buy" and ask is not None and cmd.price is not None and cmd.price >= ask:
                self.violations.append(f"buy {cmd.client_order_id} at {cmd.price} >= ask {ask}")
            if cmd.side == "sell" and bid is not None and cmd.price is not None and cmd.price <= bid:
                self.violations.append(f"sell {cmd.client_order_id} at {cmd.price} <= bid {bid}")

    # ------------------------------------------------------------------ observing

    def venue_orders(self) -> list[OrderUpdate]:
        return [
            o
            for o in self.engine.open_orders(self.est, "main", self.cfg.symbol)
            if parse_client_order_id(self.core.prefix, o.client_order_id)
        ]

    def venue_position(self) -> Decimal:
        """Signed: + long, - short."""
        pos = self.est.accounts["main"].positions.get(self.cfg.symbol)
        return pos.contracts if pos else Decimal(0)

    def grid_position(self) -> Decimal:
        return self.core.position(self.gst)

    def invariant_problems(self) -> list[str]:
        """What must hold at every quiet moment; empty when everything does."""
        problems = list(self.violations)
        per_slot: dict[int, list[str]] = {}
        for o in self.venue_orders():
            parsed = parse_client_order_id(self.core.prefix, o.client_order_id)
            assert parsed is not None
            per_slot.setdefault(parsed[1], []).append(o.client_order_id)
        for index, cids in per_slot.items():
            if len(cids) > 1:
                problems.append(f"slot {index} has {len(cids)} live orders at the venue: {cids}")
        cids = [p.client_order_id for p in self.placed]
        if len(cids) != len(set(cids)):
            problems.append("a client order id was placed twice")
        if self.venue_position() != self.grid_position():
            problems.append(f"venue position {self.venue_position()} != grid position {self.grid_position()}")
        slots = {s.index: s for s in self.gst.slots}
        for s in slots.values():
            if s.holding == 0 or self.gst.status == "halted":
                continue
            if s.role == "open" and s.client_order_id is not None:
                continue  # a partly filled opening order still working: its counter order comes when it ends
            if s.retry_at > self.gst.ts:
                continue  # refused recently (the book moved under a late command): it waits out its back-off
            closing = s.client_order_id is not None and s.role == "close"
            side = "sell" if s.holding > 0 else "buy"
            assert self.gst.anchor is not None
            price = self.core.lattice(self.gst.anchor).price(s.index + (1 if s.holding > 0 else -1))
            crossing = (side == "sell" and self.gst.bid is not None and price <= self.gst.bid) or (
                side == "buy" and self.gst.ask is not None and price >= self.gst.ask
            )
            if not closing and not crossing:
                problems.append(f"slot {s.index} holds {s.holding} with no closing order")
        return problems


def fill_event_id(order: OrderUpdate) -> str:
    return ids.order_event_id(order.venue, order.account, order.client_order_id, order.status, order.filled)


def drive(h: Harness, path: list[tuple[float, float]], check: Any = None, aim: bool = True) -> None:
    """Tick a harness along a path of (relative move, volume), checking its invariants each time;
    `aim` steers hypothesis toward sessions that trade (inside a property test only)."""
    price = 100.0
    for move, volume in path:
        price *= 1 + move
        h.tick(f"{max(price, 1):.2f}", f"{volume:.3f}")
        assert h.invariant_problems() == []
        if check is not None:
            check(h)
    if aim:
        from hypothesis import target

        target(float(h.gst.fills), label="fills")  # steer the search toward sessions that trade a lot
