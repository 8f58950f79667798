"""What the executor says about an order it did not get from the venue: refusals and unknowns.

Its events use the venue's ids for the same facts, so a refusal and the venue's own report of
the same order never both look like new facts, and a replayed strategy sees the same inputs
(a refusal carries the command's decision time as `ts`).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas import ids
from schemas.account import ZERO, OrderUpdate
from schemas.base import OrderStatus, RejectReason
from schemas.commands import PlaceOrder, check_client_order_id
from schemas.subjects import SubjectError, parse


def order_event(cmd: PlaceOrder, status: OrderStatus, reason: RejectReason, message: str, now: float) -> OrderUpdate:
    """The executor's word on a place it refused (`rejected`) or could not settle (`unknown`)."""
    return OrderUpdate(
        id=ids.order_event_id(cmd.venue, cmd.account, cmd.client_order_id, status, ZERO),
        venue=cmd.venue,
        account=cmd.account,
        symbol=cmd.symbol,
        client_order_id=cmd.client_order_id,
        side=cmd.side,
        order_type=cmd.order_type,
        price=cmd.price,
        amount=cmd.amount,
        remaining=cmd.amount,
        status=status,
        post_only=cmd.post_only,
        reduce_only=cmd.reduce_only,
        reason=reason,
        message=message[:500],
        ts=cmd.ts,  # the decision's time keeps replays of the strategy deterministic
        ts_local=int(now * 1000),
    )


def invalid_command(subject: str, data: bytes, reason: str, ts_local: int) -> OrderUpdate | None:
    """A rejection for a place command that was not admitted, if its body names its order.

    Venue, account and symbol come from the subject it arrived on, never from the body: a body
    that names another account is refused on the subject's account, not answered on the other's.
    """
    try:
        where = parse(subject)
    except SubjectError:
        return None
    if where.family != "cmd" or where.kind != "place" or not (where.venue and where.account and where.symbol):
        return None
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    cid, side = raw.get("client_order_id"), raw.get("side")
    if not isinstance(cid, str) or side not in ("buy", "sell"):
        return None
    try:
        check_client_order_id(cid)
    except ValueError:
        return None
    amount = _decimal(raw.get("amount"))
    price = _decimal(raw.get("price"))
    size = amount if amount is not None and amount >= 0 else ZERO
    ts = raw.get("ts")
    return OrderUpdate(
        id=ids.order_event_id(where.venue, where.account, cid, "rejected", ZERO),
        venue=where.venue,
        account=where.account,
        symbol=where.symbol,
        client_order_id=cid,
        side=side,
        price=price if price is not None and price > 0 else None,
        amount=size,
        remaining=size,
        status="rejected",
        reason="invalid",
        message=reason[:500],
        ts=ts if type(ts) is int and 0 <= ts < 10**14 else 0,
        ts_local=ts_local,
    )


_TOO_BIG = Decimal(10) ** 15  # no real size or price is this large


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, (str, int, float)):  # a bool is an int, and "True" is no number
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and abs(d) < _TOO_BIG else None
