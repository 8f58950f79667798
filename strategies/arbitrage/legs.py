"""Sizes, prices and client ids of the arbitrage's orders (pure arithmetic on market rules).

Both legs hold the same *base* quantity: a perpetual's order is in contracts (base / contract
size) and a spot order in base, each rounded toward zero to its own lot. Prices are limits at
most `band` through the touch, never an unpriced market order.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from schemas.account import ZERO
from schemas.base import Side
from strategies.arbitrage.state import LegBook

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGITS = frozenset(_B36)
# Leg and side in one capital (base 36 digits are lower case, so the id parses back):
# A/B = leg 0 buy/sell, C/D = leg 1 buy/sell.
_CODES: dict[tuple[int, Side], str] = {(0, "buy"): "A", (0, "sell"): "B", (1, "buy"): "C", (1, "sell"): "D"}
_DECODE: dict[str, tuple[int, Side]] = {v: k for k, v in _CODES.items()}


def base36(n: int) -> str:
    if n < 0:
        raise ValueError(f"base36 of a negative number {n}")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def client_order_id(prefix: str, key: int, leg: int, side: Side, n: int) -> str:
    """Deterministic from (side, leg's symbol, the next funding time the saga is for, the order's
    number): a restart or a replay recomputes the same id, and the executor and the venue refuse a
    second order under it."""
    return f"{prefix}{base36(key // 1000)}{_CODES[(leg, side)]}{base36(n)}"


def parse_client_order_id(prefix: str, cid: str) -> tuple[int, Side, int] | None:
    """(leg, side, number) of one of ours, else None."""
    if not cid.startswith(prefix):
        return None
    key, code, n = cid[len(prefix) :], "", ""
    for i, ch in enumerate(key):
        if ch in _DECODE:
            key, code, n = key[:i], ch, key[i + 1 :]
            break
    if not code or not key or not n or not set(key + n) <= _DIGITS:
        return None
    leg, side = _DECODE[code]
    return leg, side, int(n, 36)


def longest_id(prefix: str) -> int:
    """The longest id an instance makes in a long life: funding times to the year 2100, a million orders."""
    return len(client_order_id(prefix, 4_102_444_800_000, 1, "sell", 36**4 - 1))


def to_units(leg: LegBook, base: Decimal) -> Decimal:
    """A base quantity in the leg's order units (contracts on a perpetual)."""
    return base if leg.spot else base / leg.market.contract_size


def to_base(leg: LegBook, units: Decimal) -> Decimal:
    return units if leg.spot else units * leg.market.contract_size


def lot_floor(leg: LegBook, base: Decimal) -> Decimal:
    """The largest whole number of the leg's lots within `base` (toward zero), in base."""
    lot = leg.market.lot_size
    units = to_units(leg, abs(base))
    whole = (units / lot).to_integral_value(rounding=ROUND_FLOOR) * lot
    out = to_base(leg, whole)
    return out if base >= 0 else -out


def closing(leg: LegBook) -> Decimal:
    """The order (signed base) that closes a leg: its whole lots; but a spot short is rounded up,
    so the interest owed in the coin is repaid with the loan and no debt stays behind (the
    rest is a long below one lot), where a next long position's exit would sell coins the
    account does not have."""
    if leg.spot and leg.held < 0:
        lot = leg.market.lot_size
        return to_base(leg, (to_units(leg, -leg.held) / lot).to_integral_value(rounding=ROUND_CEILING) * lot)
    return -lot_floor(leg, leg.held)


def limit_price(leg: LegBook, side: Side, band: Decimal) -> Decimal | None:
    """A limit at most `band` through the far touch, on the tick; None without a book."""
    tick = leg.market.tick_size
    if side == "buy":
        if leg.ask is None:
            return None
        raw = leg.ask * (1 + band)
        return (raw / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
    if leg.bid is None:
        return None
    raw = leg.bid * (1 - band)
    price = (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick
    return max(price, tick)


def tradable(leg: LegBook, base: Decimal, price: Decimal | None) -> bool:
    """Whether an order for `base` (already on the lot) passes the leg's minimums."""
    units = to_units(leg, abs(base))
    if units <= 0 or units < leg.market.min_amount:
        return False
    if price is not None and price * units * leg.market.contract_size < leg.market.min_notional:
        return False
    return True


def needs_margin(leg: LegBook, side: Side, base: Decimal) -> bool:
    """A spot order that sells below zero or buys back a short goes through the margin account."""
    if not leg.spot:
        return False
    if side == "sell":
        return leg.held - base < 0
    return leg.held < 0


def hedge_of(first: LegBook, second: LegBook) -> Decimal:
    """What the second leg should hold against what the first holds: the same base quantity,
    opposite, rounded toward zero to the second leg's lot."""
    return -lot_floor(second, first.held)


def gap_side(gap: Decimal) -> Side:
    return "buy" if gap > 0 else "sell"


def remainder(first: LegBook, second: LegBook) -> Decimal:
    """The base quantity of the first leg the second leg's lot cannot hedge."""
    return abs(first.held) - abs(hedge_of(first, second)) if first.held else ZERO
