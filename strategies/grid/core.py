"""The grid's decision core: `step(state, event) -> (state, commands)`, pure.

No clock, no I/O, no randomness: time comes from the events, so replaying the recorded
inputs reproduces every decision. Each decision computes a *target* (the orders that should
rest now, from the price, the slots and the status) and emits only the places and cancels
that close the gap to what is live; a restart or a replay recomputes the same target and so
the same orders with the same client ids.

Modes: `long` opens buys below the center and sells each filled buy one level up; `short`
mirrors it; `neutral` opens both sides and closes each fill one level toward the center.
Each side holds at most `levels` units (filled slots plus live opening orders), so inventory
is bounded whatever the price does. The center trails the price on the lattice when the
price leaves it by more than `trail_levels` levels: far opening orders are canceled, near ones
placed; slots holding inventory keep their closing orders.

A slot never has two live orders: a new order is placed only once the previous one ended
(closed, canceled, rejected, expired), as reported on the bus.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from msgspec.structs import replace

from bus.contract import Inbound
from schemas import ids
from schemas.account import ZERO, OrderUpdate
from schemas.base import Side
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import (
    BreakerChange,
    ControlCommand,
    GridLevel,
    GridSlot,
    GridState,
    OrderRole,
    StrategyState,
    StrategyStatus,
    VenueSnapshot,
    worst_breaker,
)
from schemas.subjects import ALL_INSTANCES, breaker_scopes
from strategies.grid.config import GridConfig
from strategies.grid.lattice import Lattice, client_order_id, client_prefix, parse_client_order_id

PUBLISH_EVERY_MS = 5_000  # price-only changes (last price, unrealized PnL) are published this often
RETRY_BASE_MS = 1_000  # a slot whose order was refused waits this long, doubling per refusal
RETRY_MAX_MS = 60_000
TERMINAL = frozenset({"closed", "canceled", "rejected", "expired"})


class Target(NamedTuple):
    role: OrderRole
    side: Side
    price: Decimal
    amount: Decimal
    reduce_only: bool = False


def phase_of(holding: Decimal, status: str | None) -> str:
    if holding != 0:
        return "filled"
    if status is None:
        return "free"
    return status  # pending | open | canceling


def _settle(slot: GridSlot, **changes: Any) -> GridSlot:
    """A slot with changes applied and its phase recomputed from them."""
    s = replace(slot, **changes)
    phase = phase_of(s.holding, s.status)
    return s if s.phase == phase else replace(s, phase=phase)


def _crosses(side: Side, price: Decimal, bid: Decimal | None, ask: Decimal | None) -> bool:
    """Would this order take liquidity (a buy at or above the ask, a sell at or below the bid)?"""
    return (side == "buy" and ask is not None and price >= ask) or (side == "sell" and bid is not None and price <= bid)


class GridCore:
    def __init__(self, config: GridConfig, market: Market) -> None:
        self.cfg = config
        self.market = market
        self.prefix = client_prefix(config.instance)
        self.origin = f"grid/{config.instance}"
        self.scopes = set(breaker_scopes(config.venue, config.symbol))
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
            instance=c.instance,
            venue=c.venue,
            account=c.account,
            symbol=c.symbol,
            mode=c.mode,
            market=self.market,
            anchor=c.anchor,
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
        except Exception as exc:  # noqa: BLE001 - a fill we cannot book must not vanish into the DLQ
            # Inventory the core cannot account for: stop trading (everything is canceled) and
            # say why, instead of dead-lettering a real fill and trading on a wrong position.
            fault = f"{type(ev).__name__} {getattr(ev, 'client_order_id', '')}: {type(exc).__name__}: {exc}"
            return self.decide(replace(state, fault=fault, halted=True, seq=inbound.seq), inbound.seq, changed=True)
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
        q = st.quiet
        if (
            q is not None
            and q[0] < ask <= q[1]
            and q[2] <= bid < q[3]
            and q[4] <= ev.last < q[5]
            and ev.ts - st.published_ts < PUBLISH_EVERY_MS
            and (st.wake_at == 0 or ev.ts < st.wake_at)
        ):  # the fast path: this tick changes no decision
            return replace(st, last_price=ev.last, bid=bid, ask=ask, ts=max(st.ts, ev.ts), tick_ts=ev.ts, seq=seq), []
        st = replace(st, last_price=ev.last, bid=bid, ask=ask, ts=max(st.ts, ev.ts), tick_ts=ev.ts, seq=seq)
        return self.decide(st, seq, changed=False)

    def on_order(self, st: GridState, ev: OrderUpdate, seq: int) -> tuple[GridState, list[Any]]:
        if ev.symbol != st.symbol or ev.venue != st.venue or ev.account != st.account:
            return st, []
        parsed = parse_client_order_id(self.prefix, ev.client_order_id)
        if parsed is None:
            return st, []
        _role, index, _gen = parsed
        slots = {s.index: s for s in st.slots}
        slot = slots.get(index)
        if slot is None or slot.client_order_id != ev.client_order_id:
            return st, []  # an order this slot no longer tracks: its end was already recorded
        st, slot = self._account_fills(st, slot, ev)
        if ev.status in TERMINAL:
            post_only_rejects, rejects, retry_at = 0, 0, 0
            if ev.status == "rejected" or ev.status == "expired":
                if ev.reason == "post_only_would_take":
                    # The book moved: try again at once; after a few, fall back to a plain limit.
                    post_only_rejects, rejects = slot.post_only_rejects + 1, slot.rejects
                else:
                    # Anything else (balance, limits, a breaker, expiry) will not change at once:
                    # back off in event time instead of hammering the venue.
                    rejects = slot.rejects + 1
                    retry_at = max(st.ts, ev.ts) + min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (rejects - 1))
            slot = _settle(
                slot,
                client_order_id=None,
                order_id=None,
                role=None,
                side=None,
                price=None,
                amount=ZERO,
                filled=ZERO,
                cost=ZERO,
                fee=ZERO,
                status=None,
                post_only_rejects=post_only_rejects,
                rejects=rejects,
                retry_at=retry_at,
            )
        elif ev.status == "open":
            slot = _settle(
                slot,
                order_id=ev.order_id,
                status="canceling" if slot.status == "canceling" else "open",
            )
        slots[index] = slot
        if slot.status is None and slot.holding != 0:
            st = self._absorb_dust(st, slots, index)
        st = replace(st, slots=self._kept(slots), ts=max(st.ts, ev.ts), seq=seq)
        return self.decide(st, seq, changed=True)

    def _absorb_dust(self, st: GridState, slots: dict[int, GridSlot], index: int) -> GridState:
        """A holding too small to close on its own (a partial fill below the venue's minimums)
        joins the nearest slot holding the same side, or the unassigned position."""
        slot = slots[index]
        if st.anchor is None:
            return st  # no lattice yet (adopted before the first price): decided when it comes
        closing_price = self.lattice(st.anchor).price(index + (1 if slot.holding > 0 else -1))
        amount = abs(slot.holding)
        if amount >= self.market.min_amount and amount * closing_price * self.market.contract_size >= self.market.min_notional:
            return st
        same_side = [s for i, s in slots.items() if i != index and s.holding * slot.holding > 0]
        freed = _settle(slot, holding=ZERO, entry_price=None)
        slots[index] = freed
        if not same_side:
            return replace(st, unassigned=st.unassigned + slot.holding)
        host = min(same_side, key=lambda s: (abs(s.index - index), s.index))
        total = host.holding + slot.holding
        entry = ((host.entry_price or ZERO) * abs(host.holding) + (slot.entry_price or ZERO) * amount) / abs(total)
        slots[host.index] = _settle(host, holding=total, entry_price=entry)
        return st

    def _account_fills(self, st: GridState, slot: GridSlot, ev: OrderUpdate) -> tuple[GridState, GridSlot]:
        """Book what the order filled since we last heard of it: inventory, entry, PnL, fees."""
        delta = ev.filled - slot.filled
        fee_delta = ev.fee_cost - slot.fee if ev.fee_cost > slot.fee else ZERO
        if delta <= 0:
            return (replace(st, fees=st.fees + fee_delta), replace(slot, fee=ev.fee_cost)) if fee_delta else (st, slot)
        cost_now = (ev.average or ev.price or slot.price or ZERO) * ev.filled
        price = (cost_now - slot.cost) / delta
        size = self.market.contract_size
        holding, entry = slot.holding, slot.entry_price
        realized = ZERO
        signed = delta if slot.side == "buy" else -delta
        if slot.role == "open" or holding == 0 or (holding > 0) == (signed > 0):
            new_holding = holding + signed
            entry = ((entry or price) * abs(holding) + price * delta) / abs(new_holding)
        else:  # a closing fill: realize against the entry
            realized = (price - (entry or price)) * delta * size * (1 if holding > 0 else -1)
            new_holding = holding + signed
            if new_holding == 0:
                entry = None
        slot = replace(slot, filled=ev.filled, cost=cost_now, fee=ev.fee_cost, holding=new_holding, entry_price=entry)
        st = replace(st, realized_pnl=st.realized_pnl + realized, fees=st.fees + fee_delta, fills=st.fills + 1)
        return st, slot

    def on_snapshot(self, st: GridState, ev: VenueSnapshot, seq: int) -> tuple[GridState, list[Any]]:
        """First start: adopt the venue's open orders of this instance and its position."""
        if st.adopted or ev.instance != st.instance:
            return st, []
        slots = {s.index: s for s in st.slots}
        next_gen = st.next_generation
        anchor = st.anchor
        for o in ev.orders:
            parsed = parse_client_order_id(self.prefix, o.client_order_id)
            if parsed is None or o.symbol != st.symbol or o.status != "open":
                continue
            role, index, gen = parsed
            held = ZERO
            if role == "close":  # a closing order means its slot holds what it still has to close
                held = (o.amount - o.filled) * (1 if o.side == "sell" else -1)
            elif o.filled > 0:
                held = o.filled * (1 if o.side == "buy" else -1)
            slots[index] = _settle(
                GridSlot(index=index),
                generation=gen,
                client_order_id=o.client_order_id,
                order_id=o.order_id,
                role=role,
                side=o.side,
                price=o.price,
                amount=o.amount,
                filled=o.filled,
                cost=(o.average or o.price or ZERO) * o.filled,
                fee=o.fee_cost,
                status="open",
                holding=held,
                entry_price=o.price if held else None,
            )
            next_gen = max(next_gen, gen + 1)
            if anchor is None and o.price is not None:
                # Keep the lattice the adopted orders were placed on.
                level = index if role == "open" else index + (1 if o.side == "sell" else -1)
                if self.cfg.spacing_type == "geometric":
                    anchor = o.price / (1 + self.cfg.spacing) ** level
                else:
                    anchor = o.price - self.cfg.spacing * level
        net = ZERO
        for p in ev.positions:
            if p.symbol == st.symbol and p.side is not None:
                net += p.contracts if p.side == "long" else -p.contracts
        assigned = sum((s.holding for s in slots.values()), ZERO)
        breakers = {k: v for k, v in ev.breakers.items() if k in self.scopes}
        st = replace(
            st,
            slots=self._kept(slots),
            next_generation=next_gen,
            anchor=anchor,
            unassigned=net - assigned,
            adopted=True,
            breakers=breakers,
            breaker=worst_breaker(breakers.values()),
            ts=max(st.ts, ev.ts),
            seq=seq,
        )
        return self.decide(st, seq, changed=True)

    def on_breaker(self, st: GridState, ev: BreakerChange, seq: int) -> tuple[GridState, list[Any]]:
        if ev.scope not in self.scopes:
            return st, []
        breakers = dict(st.breakers)
        breakers[ev.scope] = ev.state
        st = replace(st, breakers=breakers, breaker=worst_breaker(breakers.values()), ts=max(st.ts, ev.ts), seq=seq)
        return self.decide(st, seq, changed=True)

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

    @staticmethod
    def _kept(slots: dict[int, GridSlot]) -> list[GridSlot]:
        """Slots worth remembering: free ones carry nothing the next order needs."""
        return [s for _, s in sorted(slots.items()) if s.phase != "free" or s.post_only_rejects or s.rejects]

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
        if status != st.status:
            st, changed = replace(st, status=status), True
        out: list[Any] = []
        if status == "starting":
            st = replace(st, quiet=None)
        else:
            st, out = self.reconcile(st, seq)
            changed = changed or bool(out)
        if changed or st.ts - st.published_ts >= PUBLISH_EVERY_MS:
            st = replace(st, published_ts=st.ts)
            out.append(self.state_event(st))
        return st, out

    def reconcile(self, st: GridState, seq: int) -> tuple[GridState, list[Any]]:
        assert st.anchor is not None and st.last_price is not None
        cfg = self.cfg
        lat = self.lattice(st.anchor)
        last, bid, ask = st.last_price, st.bid, st.ask
        level = lat.level_at(last)
        center = st.center
        if cfg.trail_levels and abs(level - center) > cfg.trail_levels:
            center = level
        slots = {s.index: s for s in st.slots}
        targets = self.targets(st, lat, slots, center)

        out: list[Any] = []
        live = 0
        for index, slot in list(slots.items()):
            if slot.status is None:
                continue
            live += 1
            if slot.status == "canceling":
                continue
            t = targets.get(index)
            if (
                t is not None
                and t.role == slot.role
                and t.side == slot.side
                and slot.price is not None
                and abs(t.price - slot.price) <= self.market.tick_size  # an adopted order may sit a tick off
                and t.amount == slot.amount - slot.filled
            ):
                continue  # the live order is the one we want
            slots[index] = _settle(slot, status="canceling")
            out.append(self._cancel(slot, st.ts, "target moved" if t is None else "target changed"))

        wanted = [
            (t.role != "close", abs(i - level), i, t)  # closing orders first, then nearest to the price
            for i, t in targets.items()
            if slots.get(i) is None or slots[i].status is None
        ]
        wanted.sort()
        room = max(cfg.max_open_orders - live, 0)
        closing = sum(1 for w in wanted if not w[0])
        if closing > room:
            # Inventory comes first: make room for closing orders by canceling opening ones,
            # the farthest from the price first (they come back once there is room).
            opening = [s for s in slots.values() if s.status in ("pending", "open") and s.role == "open"]
            for slot in sorted(opening, key=lambda s: (-abs(s.index - level), s.index))[: closing - room]:
                slots[slot.index] = _settle(slot, status="canceling")
                out.append(self._cancel(slot, st.ts, "room for a closing order"))
        next_gen = st.next_generation
        for _, _, index, t in wanted:
            waiting = slots.get(index)
            if waiting is not None and waiting.retry_at > st.ts:
                continue  # refused recently: not yet
            if room <= 0:
                break
            room -= 1
            slot = slots.get(index) or GridSlot(index=index)
            cid = client_order_id(self.prefix, t.role, index, next_gen)
            post_only = cfg.post_only and slot.post_only_rejects < cfg.post_only_retries
            slots[index] = _settle(
                slot,
                generation=next_gen,
                client_order_id=cid,
                order_id=None,
                role=t.role,
                side=t.side,
                price=t.price,
                amount=t.amount,
                filled=ZERO,
                cost=ZERO,
                fee=ZERO,
                status="pending",
                sent_seq=seq,
            )
            next_gen += 1
            out.append(self._place(cid, t, post_only, st.ts))

        # The cleaner: never more than max_open_orders live; the oldest opening orders go first.
        live_now = [s for s in slots.values() if s.status in ("pending", "open")]
        excess = len(live_now) + sum(1 for s in slots.values() if s.status == "canceling") - cfg.max_open_orders
        if excess > 0:
            for slot in sorted((s for s in live_now if s.role == "open"), key=lambda s: (s.sent_seq, s.index))[:excess]:
                slots[slot.index] = _settle(slot, status="canceling")
                out.append(self._cancel(slot, st.ts, "over max_open_orders"))

        waits = [s.retry_at for s in slots.values() if s.retry_at > st.ts]
        st = replace(
            st,
            slots=self._kept(slots),
            center=center,
            next_generation=next_gen,
            quiet=self._quiet(lat, level, bid, ask),
            wake_at=min(waits) if waits else 0,
        )
        return st, out

    def targets(self, st: GridState, lat: Lattice, slots: dict[int, GridSlot], center: int) -> dict[int, Target]:
        """The orders that should rest now, by slot."""
        cfg = self.cfg
        bid, ask = st.bid, st.ask
        targets: dict[int, Target] = {}
        if st.status == "halted":
            return targets
        net = self.position(st)
        swap = self.market.kind == "swap"
        for s in slots.values():  # every unit of inventory rests a closing order one level on
            if s.holding == 0:
                continue
            side: Side = "sell" if s.holding > 0 else "buy"
            price = lat.price(s.index + 1 if s.holding > 0 else s.index - 1)
            amount = abs(s.holding)
            # A one-sided grid's closing orders always reduce the venue's (net) position. A
            # neutral grid holds long and short slots at once, which the venue nets: its closing
            # order reduces the position only when it points against the net.
            reduces = swap and (cfg.mode != "neutral" or (net >= amount if side == "sell" else -net >= amount))
            if st.status == "reduce_only" and not reduces:
                continue  # the executor would refuse it while the breaker is open
            if not _crosses(side, price, bid, ask):
                targets[s.index] = Target("close", side, price, amount, reduces)
        if st.status != "running":
            return targets
        sides: list[tuple[Side, range]] = []
        if cfg.mode in ("long", "neutral"):
            sides.append(("buy", range(center - 1, center - cfg.levels - 1, -1)))
        if cfg.mode in ("short", "neutral"):
            sides.append(("sell", range(center + 1, center + cfg.levels + 1)))
        for side, window in sides:
            sign = 1 if side == "buy" else -1
            units = sum(1 for s in slots.values() if s.holding * sign > 0 or (s.role == "open" and s.side == side and s.status is not None))
            for k in window:  # nearest to the center first
                s = slots.get(k)
                if s is not None and (s.holding != 0 or s.role == "close"):
                    continue  # this slot is busy with inventory
                live_here = s is not None and s.role == "open" and s.side == side and s.status is not None
                if not live_here and units >= cfg.levels:
                    continue
                price = lat.price(k)
                amount = lat.amount(k)
                if amount == 0 or not lat.in_bounds(k) or _crosses(side, price, bid, ask):
                    continue
                if not live_here:
                    units += 1
                targets[k] = Target("open", side, price, amount)
        return targets

    @staticmethod
    def _quiet(lat: Lattice, level: int, bid: Decimal | None, ask: Decimal | None) -> list[Decimal] | None:
        """Price bounds within which the next tick would reach the same decisions."""
        if bid is None or ask is None:
            return None
        a = lat.level_at(ask)
        if lat.price(a) == ask:
            a -= 1  # the set {k: price(k) < ask} changes when ask crosses price(a) or price(a+1)
        b = lat.level_at(bid)  # the set {k: price(k) > bid} changes outside [price(b), price(b+1))
        return [lat.price(a), lat.price(a + 1), lat.price(b), lat.price(b + 1), lat.price(level), lat.price(level + 1)]

    # ------------------------------------------------------------------ outputs

    def _place(self, cid: str, t: Target, post_only: bool, ts: int) -> PlaceOrder:
        c = self.cfg
        return PlaceOrder(
            id=ids.place_id(c.venue, c.account, cid),
            venue=c.venue,
            account=c.account,
            symbol=c.symbol,
            client_order_id=cid,
            side=t.side,
            order_type="limit",
            price=t.price,
            amount=t.amount,
            post_only=post_only,
            reduce_only=t.reduce_only,
            origin=self.origin,
            ts=ts,
            ttl_ms=c.ttl_ms,
        )

    def _cancel(self, slot: GridSlot, ts: int, reason: str) -> CancelOrder:
        c = self.cfg
        assert slot.client_order_id is not None
        return CancelOrder(
            id=ids.cancel_id(c.venue, c.account, slot.client_order_id),
            venue=c.venue,
            account=c.account,
            symbol=c.symbol,
            client_order_id=slot.client_order_id,
            order_id=slot.order_id,
            origin=self.origin,
            reason=reason,
            ts=ts,
            ttl_ms=c.ttl_ms,
        )

    def state_event(self, st: GridState) -> StrategyState:
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
            position=self.position(st),
            realized_pnl=st.realized_pnl,
            unrealized_pnl=unrealized,
            open_orders=sum(1 for s in st.slots if s.status in ("pending", "open", "canceling")),
            fills=st.fills,
            grid=st,
            levels=self.levels(st),
            ts=st.ts,
        )

    @staticmethod
    def position(st: GridState) -> Decimal:
        return sum((s.holding for s in st.slots), st.unassigned)

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
