"""What a removal sends (pure): cancels for the orders of an instance, and the reduce-only order
that closes its share of the venue's position.

An instance's orders are found at the venue by its client id prefix, so orders the instance
placed but never heard back about are found too. Its share of the position is the smaller of
what the venue holds and what the instance itself holds (its own fills, folded from its input
stream), with the same sign: another instance on the same symbol and account keeps its own.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from schemas import ids
from schemas.account import OrderUpdate
from schemas.base import Side
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import Market
from schemas.registry import InstanceRecord

FLATTEN_BAND = Decimal("0.01")  # how far through the last price a closing IOC may trade
FLATTEN_TTL_MS = 10_000


def origin(record: InstanceRecord) -> str:
    return f"registry/{record.kind}/{record.instance}"


def cancels(record: InstanceRecord, orders: list[OrderUpdate], prefix: str, sweep: str, ts: int) -> list[CancelOrder]:
    """A cancel for every open order of the instance; `sweep` names the pass, so a pass after
    one the venue ignored is a new command (a repeated id would be dropped as a duplicate)."""
    out = []
    for o in orders:
        if not o.client_order_id.startswith(prefix) or o.status not in ("open", "unknown"):
            continue
        out.append(
            CancelOrder(
                id=ids.cancel_id(record.venue, record.account, f"{o.client_order_id}@remove{sweep}"),
                venue=record.venue,
                account=record.account,
                symbol=record.symbol,
                client_order_id=o.client_order_id,
                order_id=o.order_id,
                origin=origin(record),
                reason=f"{record.kind} {record.instance} removed",
                ts=ts,
            )
        )
    return out


def share(venue_position: Decimal, own: Decimal) -> Decimal:
    """The signed quantity of the venue's position that is the instance's to close."""
    if venue_position == 0 or own == 0 or (venue_position > 0) != (own > 0):
        return Decimal(0)
    return min(abs(venue_position), abs(own)) * (1 if own > 0 else -1)


def flatten_client_id(prefix: str, attempt: int) -> str:
    return f"{prefix}rm{attempt:x}"


def flatten_order(
    record: InstanceRecord, market: Market, prefix: str, position: Decimal, price: Decimal, attempt: int, ts: int
) -> PlaceOrder | None:
    """The IOC that closes `position` (signed, in the market's order units), limited `FLATTEN_BAND`
    through `price`; None when it is below what the venue accepts (it is left, and reported)."""
    units = (abs(position) / market.lot_size).to_integral_value(rounding=ROUND_FLOOR) * market.lot_size
    if units <= 0 or units < market.min_amount:
        return None
    side: Side = "sell" if position > 0 else "buy"
    raw = price * (1 - FLATTEN_BAND) if side == "sell" else price * (1 + FLATTEN_BAND)
    rounding = ROUND_CEILING if side == "sell" else ROUND_FLOOR
    limit = max((raw / market.tick_size).to_integral_value(rounding=rounding) * market.tick_size, market.tick_size)
    if limit * units * market.contract_size < market.min_notional:
        return None
    cid = flatten_client_id(prefix, attempt)
    return PlaceOrder(
        id=ids.place_id(record.venue, record.account, cid),
        venue=record.venue,
        account=record.account,
        symbol=record.symbol,
        client_order_id=cid,
        side=side,
        order_type="limit",
        price=limit,
        amount=units,
        reduce_only=market.kind != "spot",  # a perpetual's close can never turn the position round
        time_in_force="IOC",
        origin=origin(record),
        ts=ts,
        ttl_ms=FLATTEN_TTL_MS,
    )
