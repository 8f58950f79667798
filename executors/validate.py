"""Checks a command must pass before it may reach a venue (pure: the command and the market rules)."""

from __future__ import annotations

from schemas.base import RejectReason
from schemas.commands import PlaceOrder
from schemas.market import Market
from venues.protocol import OrderRequest


def check_place(cmd: PlaceOrder, market: Market | None) -> tuple[RejectReason, str] | None:
    """(reason, message) if the venue would refuse the order; None if it may go."""
    if market is None:
        return "unknown_symbol", f"{cmd.venue} has no market {cmd.symbol}"
    if cmd.amount < market.min_amount:
        return "below_min", f"amount {cmd.amount} is below the minimum {market.min_amount}"
    if not market.on_lot(cmd.amount):
        return "invalid", f"amount {cmd.amount} is not a multiple of the lot size {market.lot_size}"
    if cmd.price is not None:
        if not market.on_tick(cmd.price):
            return "off_tick", f"price {cmd.price} is not on the tick size {market.tick_size}"
        notional = cmd.price * cmd.amount * market.contract_size
        if notional < market.min_notional:
            return "below_min", f"notional {notional} is below the minimum {market.min_notional}"
    if cmd.reduce_only and market.kind == "spot":
        return "invalid", "reduce-only orders exist on derivatives markets only"
    if cmd.use_margin and market.kind != "spot":
        return "invalid", "use_margin applies to spot orders only"
    return None


def order_request(cmd: PlaceOrder, deadline_ms: int) -> OrderRequest:
    """What a checked place command asks the venue for; it may not land after `deadline_ms`
    (the venue's clock): the executor's request, and the backtest's (backtest/wiring.py)."""
    return OrderRequest(
        symbol=cmd.symbol,
        client_order_id=cmd.client_order_id,
        side=cmd.side,
        order_type=cmd.order_type,
        amount=cmd.amount,
        price=cmd.price,
        post_only=cmd.post_only,
        reduce_only=cmd.reduce_only,
        use_margin=cmd.use_margin,
        time_in_force=cmd.time_in_force,
        deadline_ms=deadline_ms,
    )
