"""The two-leg saga, as named steps (pure: the state in, the state and its orders out).

    enter:  leg1    an IOC limit on the first leg, within `band` of the book
            leg2    the hedge on the other leg: brings it to the opposite of all leg 1 holds
                    (so a residue it held before, too small to trade alone, is squared too),
                    rounded to its lot (the remainder recorded); retried for what is missing
                    until `naked_ms` after leg 1 filled
            unwind  leg 2 refused or late: the excess of either leg is closed, reduce-only
    exit:   close1  the first leg (the spot leg when there is one: it cannot be reduce-only)
            close2  the other leg brought to what is left of the first; then close1 again
                    until both are flat

A step sends an order only when none of the saga's orders is live: each size is computed from
what the venue said was executed, never from what was asked. An order whose outcome is unknown
stays live (a leg is never re-sent on a guess); at the naked deadline a live hedge is canceled,
and the unwind starts once the venue has ended it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from msgspec.structs import replace

from schemas import ids
from schemas.account import ZERO
from schemas.base import Side
from schemas.commands import CancelOrder, PlaceOrder
from strategies.arbitrage import legs as L
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.state import ArbOrder, ArbState, Purpose, Saga

HOUR_MS = 3_600_000


class SagaSteps:
    """The saga's steps for one instance (its config and client id prefix)."""

    def __init__(self, cfg: ArbConfig, prefix: str) -> None:
        self.cfg = cfg
        self.prefix = prefix

    # ------------------------------------------------------------------ orders

    def place(self, st: ArbState, leg: int, purpose: Purpose, side: Side, base: Decimal, band: Decimal) -> tuple[ArbState, list[Any]]:
        """One IOC limit on `leg` for `base` (on its lot), or nothing if it cannot trade."""
        book = st.legs[leg]
        price = L.limit_price(book, side, band)
        if price is None or not L.tradable(book, base, price):
            return st, []
        assert st.saga is not None
        cid = L.client_order_id(self.prefix, st.saga.key, leg, side, st.next_n)
        units = L.to_units(book, abs(base))
        order = ArbOrder(
            client_order_id=cid,
            leg=leg,
            purpose=purpose,
            side=side,
            amount=units,
            price=price,
            reduce_only=purpose in ("unwind", "exit") and not book.spot,
            use_margin=L.needs_margin(book, side, abs(base)),
            sent_ts=st.ts,
        )
        cmd = PlaceOrder(
            id=ids.place_id(book.venue, st.account, cid),
            venue=book.venue,
            account=st.account,
            symbol=book.symbol,
            client_order_id=cid,
            side=side,
            order_type="limit",
            price=price,
            amount=units,
            reduce_only=order.reduce_only,
            use_margin=order.use_margin,
            time_in_force="IOC",
            origin=f"arbitrage/{self.cfg.instance}",
            ts=st.ts,
            ttl_ms=self.cfg.naked_ms,  # a leg that reaches the venue later than this is not sent
        )
        return replace(st, orders=[*st.orders, order], next_n=st.next_n + 1), [cmd]

    def cancel(self, st: ArbState, order: ArbOrder, reason: str) -> CancelOrder:
        book = st.legs[order.leg]
        return CancelOrder(
            id=ids.cancel_id(book.venue, st.account, order.client_order_id),
            venue=book.venue,
            account=st.account,
            symbol=book.symbol,
            client_order_id=order.client_order_id,
            order_id=order.order_id,
            origin=f"arbitrage/{self.cfg.instance}",
            reason=reason,
            ts=st.ts,
            ttl_ms=self.cfg.naked_ms,
        )

    # ------------------------------------------------------------------ steps

    def advance(self, st: ArbState) -> tuple[ArbState, list[Any]]:
        """Take the saga as far as the venue's answers allow; it may end (saga None)."""
        out: list[Any] = []
        for _ in range(6):  # a step that finishes hands over to the next one at once
            saga = st.saga
            if saga is None:
                return st, out
            step = saga.step
            st, more = getattr(self, f"step_{step}")(st, saga)
            out += more
            if st.saga is None or st.saga.step == step:
                return st, out
        return st, out

    def step_leg1(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        if st.orders:
            return st, []
        first, second = st.legs[saga.first], st.legs[1 - saga.first]
        if not first.held:
            return replace(st, saga=None), []  # nothing executed: the entry did not happen
        saga = replace(saga, step="leg2", naked_since=st.ts, remainder=L.remainder(first, second))
        if not L.hedge_of(first, second):  # less than one of the hedge's lots: nothing can cover it
            return self.start_unwind(st, saga, "leg 1 filled less than one lot of leg 2")
        return replace(st, saga=saga), []

    def step_leg2(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        first, second = st.legs[saga.first], st.legs[1 - saga.first]
        deadline = saga.naked_since + self.cfg.naked_ms
        if st.orders:
            if st.ts >= deadline:
                return self._cancel_live(st, "naked exposure limit reached")
            return st, []
        gap = L.hedge_of(first, second) - second.held
        side = L.gap_side(gap)
        if not gap or not L.tradable(second, gap, L.limit_price(second, side, self.cfg.band)):
            return self.finish_entry(st, saga)  # hedged (what is left is below the lot: recorded)
        if saga.refused or st.ts >= deadline:  # refused, or out of time: never left naked longer
            why = saga.refused or f"the hedge did not complete within {self.cfg.naked_ms} ms"
            return self.start_unwind(st, saga, why)
        if st.ts < saga.retry_at:
            return st, []
        return self.place(st, 1 - saga.first, "hedge", side, gap, self.cfg.band)

    def step_unwind(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        if st.orders or st.ts < saga.retry_at:
            return st, []
        gaps = self.excess(st)
        out: list[Any] = []
        for leg, gap in enumerate(gaps):
            if gap:
                st, more = self.place(st, leg, "unwind", L.gap_side(gap), gap, self.cfg.exit_band)
                out += more
        if not out:
            return self.finish_unwind(st)
        return st, out

    def step_close1(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        if st.orders:
            return st, []
        first = st.legs[saga.first]
        gap = L.closing(first)
        if gap and L.tradable(first, gap, L.limit_price(first, L.gap_side(gap), self.cfg.exit_band)):
            if st.ts < saga.retry_at:
                return st, []
            return self.place(st, saga.first, "exit", L.gap_side(gap), gap, self.cfg.exit_band)
        return replace(st, saga=replace(saga, step="close2")), []

    def step_close2(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        if st.orders:
            return st, []
        first, second = st.legs[saga.first], st.legs[1 - saga.first]
        gap = L.hedge_of(first, second) - second.held
        if gap and L.tradable(second, gap, L.limit_price(second, L.gap_side(gap), self.cfg.exit_band)):
            if st.ts < saga.retry_at:
                return st, []
            return self.place(st, 1 - saga.first, "exit", L.gap_side(gap), gap, self.cfg.exit_band)
        rest = L.closing(first)
        if rest and L.tradable(first, rest, L.limit_price(first, L.gap_side(rest), self.cfg.exit_band)):
            return replace(st, saga=replace(saga, step="close1")), []
        return replace(st, saga=None, holding_long=-1, exits=st.exits + 1), []

    # ------------------------------------------------------------------ transitions

    def finish_entry(self, st: ArbState, saga: Saga) -> tuple[ArbState, list[Any]]:
        return replace(st, saga=None, holding_long=saga.long_leg, entries=st.entries + 1), []

    def start_unwind(self, st: ArbState, saga: Saga, why: str) -> tuple[ArbState, list[Any]]:
        recent = [t for t in st.unwinds if t > st.ts - HOUR_MS] + [st.ts]
        st = replace(st, unwinds=recent, saga=replace(saga, step="unwind", reason=why, retry_at=0))
        if len(recent) >= self.cfg.unwinds_per_hour:  # over any margin block: every direction stops
            st = replace(st, blocked="failure_budget", blocked_long=-1)
        return st, []

    def finish_unwind(self, st: ArbState) -> tuple[ArbState, list[Any]]:
        assert st.saga is not None
        held = any(L.tradable(b, L.lot_floor(b, b.held), b.mark) for b in st.legs)
        return replace(st, saga=None, holding_long=st.saga.long_leg if held else -1), []

    def excess(self, st: ArbState) -> list[Decimal]:
        """Per leg, the base quantity to trade so that both legs hold the same quantity, opposite
        (the smaller of the two, on each leg's lot); everything when they point the same way."""
        a, b = st.legs
        if a.held and b.held and (a.held > 0) != (b.held > 0):
            keep = min(abs(a.held), abs(b.held))
            coarser = max(L.to_base(a, a.market.lot_size), L.to_base(b, b.market.lot_size))
            if abs(a.held + b.held) < coarser:
                return [ZERO, ZERO]  # apart by less than a lot: the recorded remainder, kept until the exit
        else:
            keep = ZERO
        out = []
        for book in (a, b):
            sign = 1 if book.held > 0 else -1
            target = sign * L.lot_floor(book, keep) if book.held else ZERO
            gap = L.lot_floor(book, target - book.held)
            price = L.limit_price(book, L.gap_side(gap), self.cfg.exit_band) if gap else None
            out.append(gap if gap and L.tradable(book, gap, price) else ZERO)
        return out

    def _cancel_live(self, st: ArbState, reason: str) -> tuple[ArbState, list[Any]]:
        out: list[Any] = []
        orders = []
        for o in st.orders:
            if o.status != "canceling":
                out.append(self.cancel(st, o, reason))
                o = replace(o, status="canceling")
            orders.append(o)
        return replace(st, orders=orders), out
