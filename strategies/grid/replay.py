"""Incident replay for a grid: its core over recorded inputs, offline, compared with the record.

Nothing here touches a venue or publishes: inputs come from a stream or an exported file,
decisions are collected, and the recorded commands of the same window say whether the core
would decide today what it decided then.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

from bus.contract import Outgoing, StoredMsg, fold_stream
from schemas.codec import decode
from schemas.commands import CancelOrder, PlaceOrder
from strategies.decisions import Decision, describe, first_difference
from strategies.grid.core import GridCore
from strategies.grid.runner import GridInput, grid_spec
from strategies.grid.state import GridState

__all__ = ["Decision", "Replay", "describe", "first_difference", "replay"]


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
    first: list[StoredMsg] = []

    async def noting_the_first(batches: AsyncIterable[list[StoredMsg]]) -> AsyncIterator[list[StoredMsg]]:
        async for batch in batches:
            if not first:
                first.append(batch[0])
            yield batch

    def step(m: StoredMsg, _after: GridState, outputs: list[Outgoing], _reason: str) -> None:
        for out in outputs:
            if isinstance(out.message, (PlaceOrder, CancelOrder)):
                result.decisions.append((m.seq, out.message))
                if on_decision is not None:
                    on_decision(m.seq, out.message)

    spec = grid_spec(core.cfg)
    result.state, _, result.inputs = await fold_stream(core, state, noting_the_first(inputs), spec.rules(), step, on_progress)
    if first:
        # Event time of the first and last inputs (a decision carries its input's time).
        event_ts = getattr(decode(first[0].data, GridInput), "ts", state.ts)
        result.first_ts, result.last_ts = max(state.ts, event_ts), result.state.ts
    return result
