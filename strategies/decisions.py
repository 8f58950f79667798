"""A strategy's decisions (its places and cancels) compared with the record, for incident replay.

Shared by `sqt replay grid` and `sqt replay arbitrage`: the commands a replay decides and the
ones COMMAND recorded must be the same, matched by id and then field by field.
"""

from __future__ import annotations

from schemas.commands import CancelOrder, PlaceOrder

Decision = PlaceOrder | CancelOrder


def first_difference(replayed: list[Decision], recorded: list[Decision]) -> str | None:
    """The first decision the two sides do not share, phrased for an operator; None if they agree.

    Commands are matched by id (the client order id for a place) and must then say the same
    thing: side, price, amount, flags, time."""
    by_id = {c.id: c for c in recorded}
    replayed_ids = set()
    for cmd in replayed:
        replayed_ids.add(cmd.id)
        twin = by_id.get(cmd.id)
        if twin is None:
            return f"replay decided {describe(cmd)}; the record has no such command"
        if twin != cmd:
            return f"replay decided {describe(cmd)}; the record has {describe(twin)}"
    for cmd in recorded:
        if cmd.id not in replayed_ids:
            return f"the record has {describe(cmd)}; replay did not decide it"
    return None


def describe(cmd: Decision) -> str:
    if isinstance(cmd, PlaceOrder):
        flags = "".join(
            (
                " post-only" if cmd.post_only else "",
                " reduce-only" if cmd.reduce_only else "",
                " margin" if cmd.use_margin else "",
                f" {cmd.time_in_force}" if cmd.time_in_force else "",
            )
        )
        return f"place {cmd.side} {cmd.amount} @ {cmd.price} {cmd.client_order_id}{flags} (ts {cmd.ts})"
    return f"cancel {cmd.client_order_id} ({cmd.reason}) (ts {cmd.ts})"
