"""The grid's target: the orders that should rest now, by slot, from the price, the slots and the status.

Every unit of inventory rests a closing order one level on (unless that price would take
liquidity); while running, opening orders rest in the window around the center, nearest first,
at most `levels` units per side counting inventory; `reduce_only` keeps only the closing orders
the executor would accept; `halted` rests nothing at all.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from schemas.base import Side
from schemas.ops import OrderRole
from strategies.grid.config import GridConfig
from strategies.grid.lattice import Lattice
from strategies.grid.state import GridSlot, GridState, position


class Target(NamedTuple):
    role: OrderRole
    side: Side
    price: Decimal
    amount: Decimal
    reduce_only: bool = False


def crosses(side: Side, price: Decimal, bid: Decimal | None, ask: Decimal | None) -> bool:
    """Would this order take liquidity (a buy at or above the ask, a sell at or below the bid)?"""
    return (side == "buy" and ask is not None and price >= ask) or (side == "sell" and bid is not None and price <= bid)


def targets(cfg: GridConfig, st: GridState, lat: Lattice, slots: dict[int, GridSlot], center: int) -> dict[int, Target]:
    """The orders that should rest now, by slot."""
    bid, ask = st.bid, st.ask
    out: dict[int, Target] = {}
    if st.status == "halted":
        return out
    net = position(st)
    swap = st.market.kind == "swap"
    s: GridSlot | None  # the inventory loop's slot, then the window's (which may be empty)
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
        if not crosses(side, price, bid, ask):
            out[s.index] = Target("close", side, price, amount, reduces)
    if st.status != "running":
        return out
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
            if amount == 0 or not lat.in_bounds(k) or crosses(side, price, bid, ask):
                continue
            if not live_here:
                units += 1
            out[k] = Target("open", side, price, amount)
    return out
