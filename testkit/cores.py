"""A small pure core for exercising the consumer runtime (it sums ticker prices), and a driver
that feeds any core as the runtime admits its inputs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from bus.consumer import ConsumerSpec
from bus.contract import Inbound, Rules, apply_input
from schemas.codec import encode
from schemas.market import Ticker
from schemas.ops import RiskAlert
from schemas.subjects import subject_of

POISON = Decimal(13)  # a price this core refuses (raises), to test dead-lettering


class SumState(msgspec.Struct, frozen=True):
    count: int = 0
    total: Decimal = Decimal(0)
    last_ts: int = 0


class SumCore:
    """Every 10th ticker emits an alert whose id is deterministic (so replays dedupe)."""

    def initial_state(self) -> SumState:
        return SumState()

    def step(self, state: SumState, inbound: Inbound[Ticker]) -> tuple[SumState, list[RiskAlert]]:
        event = inbound.event
        if event.last == POISON:
            raise ValueError("13 is unlucky")
        new = SumState(state.count + 1, state.total + event.last, event.ts)
        if new.count % 10:
            return new, []
        alert = RiskAlert(
            id=f"sum:{new.count}",
            component="test",
            instance="sum",
            severity="info",
            kind="sum",
            message=str(new.total),
            ts=event.ts,
        )
        return new, [alert]


def sum_spec(name: str = "sum", **kw: object) -> ConsumerSpec:
    return ConsumerSpec(
        name=name,
        stream="MARKET",
        input_type=Ticker,
        state_type=SumState,
        subjects=("md.sim.*.ticker",),
        outputs=("ops.test.*.alert",),
        **kw,  # type: ignore[arg-type]
    )


def fold_all(prices: list[Decimal]) -> SumState:
    """What the consumer must end with: the plain fold, no bus involved."""
    core, state = SumCore(), SumState()
    for i, p in enumerate(prices, start=1):
        if p == POISON:
            continue
        state, _ = core.step(state, Inbound(i, "md", _tick(p, i)))
    return state


def _tick(price: Decimal, ts: int) -> Ticker:
    return Ticker(id=f"t{ts}", venue="sim", symbol="BTC/USDT", last=price, ts=ts, ts_local=ts)


class Admitted:
    """A pure core fed one event at a time through the runtime's own admission (bus/contract.py
    `apply_input`): a test sees exactly what the runtime would publish or dead-letter."""

    def __init__(self, core: Any, rules: Rules) -> None:
        self.core = core
        self.rules = rules
        self.state = core.initial_state()
        self.seq = 0
        self.out: list[Any] = []
        self.refused: list[str] = []  # dead-letter reasons

    def feed(self, event: Any) -> list[Any]:
        self.seq += 1
        self.state, outgoing, reason = apply_input(self.core, self.state, self.rules, self.seq, subject_of(event), encode(event))
        if reason:
            self.refused.append(reason)
        out = [o.message for o in outgoing]
        self.out += out
        return out
