"""Incident replay for a grid: its core over recorded inputs, offline, compared with the record.

Nothing here touches a venue or publishes: inputs come from a stream or an exported file,
decisions are collected, and the recorded commands of the same window say whether the core
would decide today what it decided then.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bus.reader import StoredMsg
from bus.runtime import fold_stream
from schemas.commands import CancelOrder, PlaceOrder
from schemas.ops import GridState
from strategies.grid.core import GridCore
from strategies.grid.runner import GridInput, grid_spec

Decision = PlaceOrder | CancelOrder


@dataclass
class Replay:
    state: GridState
    decisions: list[tuple[int, Decision]]  # (input seq, command)
    inputs: int
    first_ts: int | None = None  # event time of the first and last input replayed: the record
    last_ts: int | None = None  # of the same span is what the decisions are compared with


async def replay(
    core: GridCore,
    state: GridState,
    inputs: AsyncIterable[list[StoredMsg]],
    on_decision: Callable[[int, Decision], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Replay:
    result = Replay(state=state, decisions=[], inputs=0)
    count = 0

    def step(m: StoredMsg, after: GridState, outputs: Sequence[Any], _reason: str) -> None:
        nonlocal count
        count += 1
        if on_progress is not None and count % 10_000 == 0:
            on_progress(count)
        if result.first_ts is None:
            result.first_ts = after.ts
        result.last_ts = after.ts
        for out in outputs:
            if isinstance(out, (PlaceOrder, CancelOrder)):
                result.decisions.append((m.seq, out))
                if on_decision is not None:
                    on_decision(m.seq, out)

    spec = grid_spec(core.cfg)
    result.state, _, result.inputs = await fold_stream(core, state, inputs, GridInput, spec.outputs, step)
    return result


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
        flags = "".join((" post-only" if cmd.post_only else "", " reduce-only" if cmd.reduce_only else ""))
        return f"place {cmd.side} {cmd.amount} @ {cmd.price} {cmd.client_order_id}{flags} (ts {cmd.ts})"
    return f"cancel {cmd.client_order_id} ({cmd.reason}) (ts {cmd.ts})"
