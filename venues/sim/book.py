"""The book a taker walks: `depth` at the touch and at each step beyond it, for a few levels.

A large market order (or a limit order that crosses) fills at several prices and pays for
its size, as on a real venue. What takers take stays taken until the next print refills the
book, so splitting one order into many within a tick does not dodge the slippage.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from schemas.base import Side
from schemas.market import Market
from venues.sim.config import SimMarket
from venues.sim.state import MarketState


class Level(NamedTuple):
    price: Decimal
    amount: Decimal


def walk(spec: SimMarket, market: Market, ms: MarketState, side: Side, amount: Decimal, limit: Decimal | None) -> list[Level]:
    """The fills a taker of `amount` gets, best price first: up to its `limit` (if any) and the
    book's last level. Reads the state, changes nothing (`consume` does, once it is decided)."""
    buying = side == "buy"
    depth = spec.depth
    step = market.tick_size * spec.book_step_ticks
    touch = ms.ask if buying else ms.bid
    taken = ms.ask_taken if buying else ms.bid_taken
    level = int(taken // depth)
    left = depth - taken % depth
    levels: list[Level] = []
    remaining = amount
    while remaining > 0 and level < spec.book_levels:
        price = touch + step * level if buying else touch - step * level
        if price <= 0 or (limit is not None and (price > limit if buying else price < limit)):
            break
        qty = (min(remaining, left) / market.lot_size).to_integral_value(rounding=ROUND_DOWN) * market.lot_size
        if qty > 0:
            levels.append(Level(price, qty))
            remaining -= qty
        level += 1
        left = depth
    return levels


def consume(ms: MarketState, side: Side, amount: Decimal) -> None:
    if side == "buy":
        ms.ask_taken += amount
    else:
        ms.bid_taken += amount
