"""The grid's decision core: `step(state, event) -> (state, commands)`, pure.

No clock, no I/O, no randomness: time comes from the events, so replaying the recorded
inputs reproduces every decision. Each decision computes a *target* (the orders that should
rest now, strategies/grid/targets.py) and emits only the places and cancels that close the gap
to what is live (strategies/grid/diff.py); a restart or a replay recomputes the same target and
so the same orders with the same client ids.

Modes: `long` opens buys below the center and sells each filled buy one level up; `short`
mirrors it; `neutral` opens both sides and closes each fill one level toward the center.
Each side holds at most `levels` units (filled slots plus live opening orders), so inventory
is bounded whatever the price does.

A slot never has two live orders: a new order is placed only once the previous one ended
(closed, canceled, rejected, expired), as reported on the bus; an `unknown` outcome is not an
end. Every event for one of this instance's client ids is booked, whether a slot still tracks
the order or not (strategies/grid/booking.py), so the grid's position and fills are always
the venue's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import msgspec
from msgspec.structs import replace

from bus.contract import Inbound, InputRejected
from schemas import ids
from schemas.account import ZERO, Liquidation, OrderUpdate
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, ControlCommand, GridLevel, StrategyState, StrategyStatus, VenueSnapshot
from schemas.sanity import check_ticker, steady_range
from schemas.subjects import ALL_INSTANCES, breaker_scopes
from strategies.grid.adoption import adopt, apply_breaker
from strategies.grid.booking import absorb_dust, book_into, book_slot_order, fill_delta, remember_ended
from strategies.grid.config import GridConfig
from strategies.grid.diff import reconcile
from strategies.grid.lattice import Lattice, client_prefix, parse_client_order_id
from strategies.grid.state import TERMINAL, Booked, Early, GridSlot, GridState, Stray, freed, kept, position, settle

PUBLISH_EVERY_MS = 5_000  # price-only changes (last price, unrealized PnL) are published this often
# A state event carries the whole state (a replay's starting point, ADR 0007) only when it is the
# first of its `FULL_EVERY_MS` of event time or the status changed; the others are compact
# (summary only), which bounds the OPS stream per instance (docs/adr/0024-bounded-state-events.md).
FULL_EVERY_MS = 60_000
FULL_ALWAYS = 0  # `full_every_ms` for the old policy: every state event full
RETRY_BASE_MS = 1_000  # a slot whose order was refused waits this long, doubling per refusal
RETRY_MAX_MS = 60_000
EARLY_KEPT = 2_000  # order events kept before the first snapshot (a first start takes seconds)


def backoff_ms(rejects: int) -> int:
    """How long a slot waits after its `rejects`-th consecutive refusal: doubling, capped."""
    return min(RETRY_MAX_MS, RETRY_BASE_MS * cast(int, 2 ** max(rejects - 1, 0)))  # int ** int is Any to mypy


class GridCore:
    def __init__(
        self, config: GridConfig, market: Market, publish_every_ms: int = PUBLISH_EVERY_MS, full_every_ms: int = FULL_EVERY_MS
    ) -> None:
        """`publish_every_ms`: how often a state that only the price moved is published; a backtest,
        which reads no state events, makes it unreachable (decisions never depend on it).
        `full_every_ms`: how often (in event time) a state event carries the whole state and the
        levels; `FULL_ALWAYS` makes every one full (the policy before ADR 0024)."""
        self.cfg = config
        self.market = market
        self.publish_every_ms = publish_every_ms
        self.full_every_ms = full_every_ms
        self.prefix = client_prefix(config.instance)
        self.scopes = set(breaker_scopes(config.venue, config.symbol, config.account))
        self._lattices: dict[Decimal, Lattice] = {}

    def lattice(self, anchor: Decimal) -> Lattice:
        lat = self._lattices.get(anchor)
        if lat is None:
            lat = self._lattices[anchor] = Lattice(self.cfg, self.market, anchor)
        return lat

    # ------------------------------------------------------------------ core

    def initial_state(self) -> GridState:
        c = self.cfg
        return GridState(
            instance=c.instance, venue=c.venue, account=c.account, symbol=c.symbol, mode=c.mode, market=self.market, anchor=c.anchor
        )

    def step(self, state: GridState, inbound: Inbound[Any]) -> tuple[GridState, list[Any]]:
        ev = inbound.event
        kind = type(ev)
        if kind is Ticker:
            return self.on_ticker(state, ev, inbound.seq)
        try:
            if kind is OrderUpdate:
                return self.on_order(state, ev, inbound.seq)
            if kind is VenueSnapshot:
                return self.on_snapshot(state, ev, inbound.seq)
        except InputRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - a fill we cannot book must not vanish into the DLQ
            # Inventory the core cannot account for: stop trading (everything is canceled) and
            # say why, instead of dead-lettering a real fill and trading on a wrong position.
            fault = f"{type(ev).__name__} {getattr(ev, 'client_order_id', '')}: {type(exc).__name__}: {exc}"
            return self.decide(replace(state, fault=fault, halted=True, seq=inbound.seq), inbound.seq, changed=True)
        if kind is Liquidation:
            return self.on_liquidation(state, ev, inbound.seq)
        if kind is BreakerChange:
            return self.on_breaker(state, ev, inbound.seq)
        if kind is ControlCommand:
            return self.on_control(state, ev, inbound.seq)
        return state, []

    # ------------------------------------------------------------------ inputs

    def on_ticker(self, st: GridState, ev: Ticker, seq: int) -> tuple[GridState, list[Any]]:
        if ev.symbol != st.symbol or ev.venue != st.venue or ev.ts < st.tick_ts:
            return st, []  # another market's, or older than the last price we acted on
        bid = ev.bid or ev.last
        ask = ev.ask or ev.last
        if bid <= ask and self.quiet_through(st, (bid, bid), (ask, ask), (ev.last, ev.last), ev.ts):
            # the fast path: this tick changes no decision (and its prices pass the guard)
            return replace(st, last_price=ev.last, bid=bid, ask=ask, ts=max(st.ts, ev.ts), tick_ts=ev.ts, seq=seq), []
        problem = check_ticker(ev, self.market, st.last_price, st.tick_ts, self.cfg.price_band)
        if problem:
            raise InputRejected(problem)  # garbage is dead-lettered, never folded in
        st = replace(st, last_price=ev.last, bid=bid, ask=ask, ts=max(st.ts, ev.ts), tick_ts=ev.ts, seq=seq)
        return self.decide(st, seq, changed=False)

    def quiet_through(
        self, st: GridState, bids: tuple[Decimal, Decimal], asks: tuple[Decimal, Decimal], lasts: tuple[Decimal, Decimal], until: int
    ) -> bool:
        """Whether tickers with bid, ask and last within these (lowest, highest) ranges, up to time
        `until`, would all change no decision: the fast path's condition. A backtest asks it for a
        whole candle's range and then feeds only the candle's last ticker."""
        q = st.quiet
        return (
            q is not None
            and q[0] < asks[0]
            and asks[1] <= q[1]
            and q[2] <= bids[0]
            and bids[1] < q[3]
            and q[4] <= lasts[0]
            and lasts[1] < q[5]
            and until - st.published_ts < self.publish_every_ms
            and (st.wake_at == 0 or until < st.wake_at)
        )

    def on_order(self, st: GridState, ev: OrderUpdate, seq: int) -> tuple[GridState, list[Any]]:
        if ev.symbol != st.symbol or ev.venue != st.venue or ev.account != st.account:
            return st, []
        parsed = parse_client_order_id(self.prefix, ev.client_order_id)
        if parsed is None:
            return st, []
        if not st.adopted:
            if len(st.early) >= EARLY_KEPT:
                raise ValueError(f"more than {EARLY_KEPT} order events before the venue snapshot")
            return replace(st, early=[*st.early, Early(seq, ev)], seq=seq), []
        st = self.book_order(st, ev, parsed[1], parsed[2])
        return self.decide(replace(st, ts=max(st.ts, ev.ts), seq=seq), seq, changed=True)

    def book_order(self, st: GridState, ev: OrderUpdate, index: int, generation: int) -> GridState:
        """Book one order event of ours, whoever tracks the order (a slot, a stray, or no one)."""
        slots = {s.index: s for s in st.slots}
        slot = slots.get(index)
        if slot is not None and slot.client_order_id == ev.client_order_id:
            return self._slot_order(st, slots, slot, ev)
        for i, stray in enumerate(st.strays):
            if stray.client_order_id == ev.client_order_id:
                return self._stray_order(st, slots, i, stray, ev)
        # Nobody tracks it. Ours since adoption: it ended (a slot lets an order go only on its
        # end) and `booked` says what its fills were. Older: it was in the venue snapshot's past
        # if the venue reported it no later than the snapshot.
        if generation < st.first_own_generation and ev.ts <= st.adopted_ts:
            return st
        known = st.booked.get(ev.client_order_id)
        if known is None and generation < st.forgotten_below:
            return replace(st, stale_events=st.stale_events + 1)
        if known is not None and ev.filled <= known.filled and ev.fee_cost <= known.fee:
            return st  # a late copy of what was booked when the order ended
        # Alive again (it landed after it was reported refused) or filling after its end: book
        # from what was booked (amount, value and fee), and cancel it if it still rests.
        known = known or Booked(ZERO)
        stray = Stray(  # its venue id comes with the event, booked next
            client_order_id=ev.client_order_id,
            index=index,
            side=ev.side,
            filled=known.filled,
            cost=known.cost,
            fee=known.fee,
        )
        return self._stray_order(replace(st, strays=[*st.strays, stray]), slots, len(st.strays), stray, ev)

    def _slot_order(self, st: GridState, slots: dict[int, GridSlot], slot: GridSlot, ev: OrderUpdate) -> GridState:
        st, slot = book_slot_order(st, slot, ev)
        if ev.status in TERMINAL:
            st = remember_ended(st, self.prefix, ev.client_order_id, slot.filled, slot.cost, slot.fee)
            post_only_rejects, rejects, retry_at = 0, 0, 0
            if ev.status in ("rejected", "expired"):
                if ev.reason == "post_only_would_take":
                    # The book moved: try again at once; after a few, fall back to a plain limit.
                    post_only_rejects, rejects = slot.post_only_rejects + 1, slot.rejects
                elif ev.reason == "reduce_only_would_increase":
                    # The position moved between decision and execution: the next target
                    # recomputes whether the closing order reduces it; try again at once.
                    post_only_rejects, rejects = slot.post_only_rejects, slot.rejects
                else:
                    # Anything else (balance, limits, a breaker, expiry) will not change at once:
                    # back off in event time instead of hammering the venue.
                    rejects = slot.rejects + 1
                    retry_at = max(st.ts, ev.ts) + backoff_ms(rejects)
            slot = freed(slot, post_only_rejects=post_only_rejects, rejects=rejects, retry_at=retry_at)
        elif ev.status == "open":
            slot = settle(slot, order_id=ev.order_id, status="canceling" if slot.status == "canceling" else "open")
        slots[slot.index] = slot
        if slot.status is None and slot.holding != 0:
            st = absorb_dust(st, slots, slot.index, self.lattice(st.anchor) if st.anchor is not None else None, self.market)
        return replace(st, slots=kept(slots))

    def _stray_order(self, st: GridState, slots: dict[int, GridSlot], i: int, stray: Stray, ev: OrderUpdate) -> GridState:
        d = fill_delta(stray.filled, stray.cost, stray.fee, ev, None)  # no fallback: the event's own price is the last resort
        st = book_into(st, slots, stray.index, stray.side, d)
        strays = list(st.strays)
        if ev.status in TERMINAL:
            del strays[i]
            st = remember_ended(st, self.prefix, ev.client_order_id, d.filled, d.cost, max(ev.fee_cost, stray.fee))
        else:
            strays[i] = replace(
                stray, order_id=ev.order_id or stray.order_id, filled=d.filled, cost=d.cost, fee=max(ev.fee_cost, stray.fee)
            )
        st = replace(st, strays=strays, slots=kept(slots))
        if stray.index in slots and slots[stray.index].status is None and slots[stray.index].holding != 0:
            st = absorb_dust(st, slots, stray.index, self.lattice(st.anchor) if st.anchor is not None else None, self.market)
            st = replace(st, slots=kept(slots))
        return st

    def on_snapshot(self, st: GridState, ev: VenueSnapshot, seq: int) -> tuple[GridState, list[Any]]:
        """First start: adopt the venue's open orders of this instance and its position."""
        if ev.instance == st.instance and (ev.venue, ev.account, ev.symbol) != (st.venue, st.account, st.symbol):
            # Addressed to this grid but about another market: garbage, whenever it comes.
            raise InputRejected(
                f"a snapshot for {ev.venue}/{ev.account}/{ev.symbol}, but grid {st.instance} trades {st.venue}/{st.account}/{st.symbol}"
            )
        if st.adopted or ev.instance != st.instance:
            return st, []
        early = st.early
        st = adopt(self.cfg, self.prefix, replace(st, early=[]), ev, self.scopes, seq)
        for e in early:
            if e.seq > ev.input_seq:  # may have happened after the venue was asked: book it
                parsed = parse_client_order_id(self.prefix, e.event.client_order_id)
                assert parsed is not None
                st = self.book_order(st, e.event, parsed[1], parsed[2])
        return self.decide(st, seq, changed=True)

    def on_liquidation(self, st: GridState, ev: Liquidation, seq: int) -> tuple[GridState, list[Any]]:
        """The venue closed the position: the grid holds nothing any more, and stops until an
        operator has looked (its orders on the market were canceled with it)."""
        if ev.symbol != st.symbol or ev.venue != st.venue or ev.account != st.account:
            return st, []
        size = self.market.contract_size
        realized = sum(((ev.price - (s.entry_price or ev.price)) * s.holding * size for s in st.slots if s.holding), ZERO)
        slots = {s.index: settle(s, holding=ZERO, entry_price=None) for s in st.slots}
        fault = f"liquidated by the venue: {ev.contracts} {ev.side} at {ev.price} (fee {ev.fee})"
        st = replace(
            st,
            slots=kept(slots),
            unassigned=ZERO,
            realized_pnl=st.realized_pnl + realized,
            fees=st.fees + ev.fee,
            halted=True,
            fault=fault,
            ts=max(st.ts, ev.ts),
            seq=seq,
        )
        return self.decide(st, seq, changed=True)

    def on_breaker(self, st: GridState, ev: BreakerChange, seq: int) -> tuple[GridState, list[Any]]:
        if ev.scope not in self.scopes:
            return st, []
        st = apply_breaker(st, ev.scope, ev)
        return self.decide(replace(st, ts=max(st.ts, ev.ts), seq=seq), seq, changed=True)

    def on_control(self, st: GridState, ev: ControlCommand, seq: int) -> tuple[GridState, list[Any]]:
        if ev.target_component != "grid" or ev.target_instance not in (st.instance, ALL_INSTANCES):
            return st, []
        match ev.action:
            case "pause":
                st = replace(st, paused=True)
            case "resume":
                st = replace(st, paused=False)
            case "halt":
                st = replace(st, halted=True)
            case "reset":  # after a fault too, once an operator has looked
                st = replace(st, paused=False, halted=False, fault=None)
        return self.decide(replace(st, ts=max(st.ts, ev.ts), seq=seq), seq, changed=True)

    # ------------------------------------------------------------------ decisions

    def status_of(self, st: GridState) -> StrategyStatus:
        if st.anchor is None or st.last_price is None or not st.adopted:
            return "starting"
        if st.halted or st.breaker == "halted":
            return "halted"
        if st.breaker == "reduce_only":
            return "reduce_only"
        if st.paused:
            return "paused"
        return "running"

    def decide(self, st: GridState, seq: int, changed: bool) -> tuple[GridState, list[Any]]:
        """Recompute the target, emit what closes the gap, and publish the state if it moved."""
        if st.anchor is None and st.last_price is not None and st.adopted:
            st = replace(st, anchor=st.last_price)
        status = self.status_of(st)
        moved = status != st.status
        if moved:
            st, changed = replace(st, status=status), True
        out: list[Any] = []
        if status == "starting":
            st = replace(st, quiet=None)
        else:
            assert st.anchor is not None
            st, out = reconcile(self.cfg, self.prefix, st, self.lattice(st.anchor), seq)
            changed = changed or bool(out)
            if st.quiet is not None and st.last_price is not None:
                # The fast path skips the market data guard: keep it to prices the guard accepts.
                lo, hi = steady_range(st.last_price, self.cfg.price_band.max_jump)
                q = st.quiet
                st = replace(st, quiet=[max(q[0], lo), min(q[1], hi), max(q[2], lo), min(q[3], hi), max(q[4], lo), min(q[5], hi)])
        if changed or st.ts - st.published_ts >= self.publish_every_ms:
            full = moved or self.full_due(st)
            st = replace(st, published_ts=st.ts)
            out.append(self.state_event(st, full))
        return st, out

    def full_due(self, st: GridState) -> bool:
        """Whether the state event about to be published must carry the whole state: the first one
        ever, and the first of every `full_every_ms` of event time (its window starts at a multiple
        of it). Derived from `published_ts`, the last publication's time, so it needs no state of
        its own, a replay decides it the same, and a restart (which resumes from a checkpoint with
        the same `published_ts`) leaves a full one within `full_every_ms` like a run that never
        stopped. At most day / full_every_ms + 1 a day, plus one per status change."""
        every = self.full_every_ms
        return every <= FULL_ALWAYS or st.published_ts == 0 or st.ts // every != st.published_ts // every

    # ------------------------------------------------------------------ outputs

    def state_event(self, st: GridState, full: bool = True) -> StrategyState:
        """The state event: the summary always; the whole state and the drawable levels when `full`
        (a compact one has `state=None`, `levels=[]`: readers that need them take the last full)."""
        size = self.market.contract_size
        last = st.last_price
        unrealized = ZERO
        if last is not None:
            for s in st.slots:
                if s.holding and s.entry_price is not None:
                    unrealized += (last - s.entry_price) * s.holding * size
        return StrategyState(
            id=ids.state_id("grid", st.instance, st.seq),
            component="grid",
            instance=st.instance,
            venue=st.venue,
            account=st.account,
            symbol=st.symbol,
            status=st.status,
            input_seq=st.seq,
            position=position(st),
            realized_pnl=st.realized_pnl,
            unrealized_pnl=unrealized,
            open_orders=sum(1 for s in st.slots if s.status in ("pending", "open", "canceling")) + len(st.strays),
            fills=st.fills,
            state=msgspec.to_builtins(st) if full else None,
            levels=self.levels(st) if full else [],
            ts=st.ts,
        )

    @staticmethod
    def position(st: GridState) -> Decimal:
        return position(st)

    def levels(self, st: GridState) -> list[GridLevel]:
        """The drawable grid: the order windows around the center plus every busy slot."""
        if st.anchor is None:
            return []
        lat = self.lattice(st.anchor)
        slots = {s.index: s for s in st.slots}
        span = range(st.center - self.cfg.levels - 1, st.center + self.cfg.levels + 2)
        out = []
        for k in sorted(set(span) | set(slots)):
            s = slots.get(k)
            out.append(
                GridLevel(
                    index=k,
                    price=lat.price(k),
                    phase=s.phase if s else "free",
                    side=s.side if s else None,
                    role=s.role if s else None,
                    client_order_id=s.client_order_id if s else None,
                    order_price=s.price if s else None,
                    amount=s.amount if s else ZERO,
                    filled=s.filled if s else ZERO,
                    holding=s.holding if s else ZERO,
                )
            )
        return out
