"""Incident replay for the risk monitor: its core over its recorded inputs, offline.

The monitor's input stream holds everything it judged, its own clock included, so folding it
from its first input through the same core makes every breaker decision again at the same
input. Decisions stored inside the window are compared with the breaker changes recorded on
OPS for it; with changed limits (`--set`), the differences are where they would have decided
otherwise. Nothing here publishes or writes the bucket.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import msgspec

from bus.contract import Outgoing, StoredMsg, fold_stream
from monitors.risk.config import RiskConfig
from monitors.risk.core import RiskCore
from monitors.risk.runner import risk_spec
from monitors.risk.state import RiskState
from schemas.ops import BreakerChange


@dataclass
class Replayed:
    state: RiskState
    inputs: int
    decisions: list[tuple[int, BreakerChange]] = field(default_factory=list)  # (input seq, change) inside the window
    refused: int = 0  # inputs dead-lettered (as live, they change nothing)


async def replay(
    core: RiskCore, batches: AsyncIterable[list[StoredMsg]], since_ns: int, until_ns: int, show: Callable[[int, BreakerChange], None]
) -> Replayed:
    out = Replayed(core.initial_state(), 0)
    rules = risk_spec(core.cfg).rules()

    def step(m: StoredMsg, _after: RiskState, outputs: list[Outgoing], reason: str) -> None:
        if reason:
            out.refused += 1
        if not since_ns <= m.ts_ns <= until_ns:
            return
        for o in outputs:
            if isinstance(o.message, BreakerChange):
                out.decisions.append((m.seq, o.message))
                show(m.seq, o.message)

    out.state, _last, out.inputs = await fold_stream(core, out.state, batches, rules, on_step=step)
    return out


def key(change: BreakerChange) -> tuple[str, str, str, int]:
    return (change.scope, change.state, change.previous, change.ts)


def first_difference(replayed: list[BreakerChange], recorded: list[BreakerChange]) -> str | None:
    """Where the replayed decisions part from the recorded ones (None when they agree)."""
    for i, (a, b) in enumerate(zip(replayed, recorded)):
        if key(a) != key(b):
            return f"decision {i + 1}: replayed {describe(a)}; recorded {describe(b)}"
    if len(replayed) != len(recorded):
        longer, name = (replayed, "replayed") if len(replayed) > len(recorded) else (recorded, "recorded")
        return f"decision {min(len(replayed), len(recorded)) + 1}: only {name}: {describe(longer[min(len(replayed), len(recorded))])}"
    return None


def describe(change: BreakerChange) -> str:
    trips = ", ".join(f"{t.breaker} {t.value} vs {t.limit}" for t in change.trips) or "closed"
    return f"{change.ts} {change.scope} {change.previous} -> {change.state} ({trips})"


def with_overrides(cfg: RiskConfig, overrides: list[str]) -> RiskConfig:
    """`flash_crash.move=0.03`-style changes to a risk config (ValueError names a bad one)."""
    base = msgspec.to_builtins(cfg)
    for item in overrides:
        path, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. flash_crash.move=0.03")
        node = base
        *parents, leaf = path.split(".")
        for name in parents:
            if not isinstance(node.get(name), dict):
                raise ValueError(f"--set {item!r}: risk has no table {name!r}")
            node = node[name]
        node[leaf] = value
    try:
        return msgspec.convert(base, RiskConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"--set: {exc}") from None
