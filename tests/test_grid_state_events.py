"""Bounded state events (docs/adr/0024-bounded-state-events.md): a grid publishes its whole state
at most once a minute of event time and on every status change, compact summaries between, and a
replay still starts from the last full one before any moment and reproduces the same state and
the same outputs, byte for byte."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from bench.state_size import DAY_MS, grid, prices, sim, state_bytes
from bus import export
from bus.contract import Inbound, StoredMsg
from cli.replay import FromFile, is_full
from schemas import subjects
from schemas.codec import decode, encode
from schemas.ops import StrategyState
from strategies.grid.core import FULL_ALWAYS, FULL_EVERY_MS, PUBLISH_EVERY_MS, GridCore
from strategies.grid.state import GridState
from testkit.grid import Driver, Harness
from testkit.grid import grid as small_grid

HOURS = 3
COMPACT_MAX = 512  # bytes a compact state event may take


@dataclass
class Session:
    harness: Harness
    states: list[StrategyState]
    inputs: list[Inbound[Any]]
    commands: list[str]


def session(full_every_ms: int) -> Session:
    h = Harness(grid(), sim(), full_every_ms=full_every_ms)
    for price, volume in prices(HOURS, seed=3):
        h.tick(price, volume)
    return Session(h, list(h.states), list(h.inputs), [c.id for c in (*h.placed, *h.canceled)])


@pytest.fixture(scope="module")
def bounded() -> Session:
    return session(FULL_EVERY_MS)


@pytest.fixture(scope="module")
def all_full() -> Session:
    return session(FULL_ALWAYS)


def test_a_compact_state_event_carries_the_summary_and_neither_state_nor_levels() -> None:
    d = Driver(small_grid(mode="long", levels=1))
    d.tick("100")
    full, compact = d.core.state_event(d.state), d.core.state_event(d.state, full=False)
    assert full.state is not None and full.levels and is_full(encode(full))
    assert compact.state is None and compact.levels == [] and not is_full(encode(compact))
    assert replace(full, state=None, levels=[]) == compact  # the same summary, id and time
    assert len(encode(compact)) < COMPACT_MAX < len(encode(full))
    # Events stored before ADR 0024 (all full, some without `levels`) still decode.
    old = msgspec.json.decode(encode(full))
    del old["levels"]
    assert decode(msgspec.json.encode(old)) == replace(full, levels=[])


def test_full_events_come_once_a_minute_of_event_time_and_on_every_status_change(bounded: Session) -> None:
    states = bounded.states
    assert states[0].state is not None  # the first ever
    changes = 0
    for before, ev in zip(states, states[1:], strict=False):
        moved = ev.status != before.status
        changes += moved
        new_minute = ev.ts // FULL_EVERY_MS != before.ts // FULL_EVERY_MS
        assert (ev.state is not None) == (moved or new_minute), (before, ev)
    fulls = [ev for ev in states if ev.state is not None]
    span = states[-1].ts - states[0].ts
    assert len(fulls) <= span // FULL_EVERY_MS + 2 + changes  # the minutes it touches, and its status changes
    # A replay never starts far back: with prints every 500 ms a full one comes every minute.
    assert max(b.ts - a.ts for a, b in zip(fulls, fulls[1:], strict=False)) <= FULL_EVERY_MS + PUBLISH_EVERY_MS
    assert len(states) - len(fulls) > 10 * len(fulls)  # the session did publish between them


def test_the_state_subjects_bytes_per_day_stay_under_the_policys_bound(bounded: Session, all_full: Session) -> None:
    assert bounded.commands == all_full.commands  # the policy decides nothing
    subject = subjects.ops("grid", grid().instance, "state")
    span = HOURS * 3_600_000
    [(instance, after)] = state_bytes((subject, encode(ev)) for ev in bounded.states).items()
    [(_, before)] = state_bytes((subject, encode(ev)) for ev in all_full.states).items()
    assert instance == grid().instance and (after.events, before.events) == (len(bounded.states), len(all_full.states))
    per_day = after.per_day(span)
    changes = sum(a.status != b.status for a, b in zip(bounded.states, bounded.states[1:], strict=False))
    largest_full = max(len(encode(ev)) for ev in bounded.states if ev.state is not None)
    fulls_a_day = DAY_MS / FULL_EVERY_MS + (2 + changes) * DAY_MS / span
    assert per_day["full"] <= fulls_a_day
    assert per_day["payload"] <= fulls_a_day * largest_full + per_day["events"] * COMPACT_MAX
    assert per_day["payload"] < before.per_day(span)["payload"] / 5  # and far below every event full
    assert all(len(encode(ev)) < COMPACT_MAX for ev in bounded.states if ev.state is None)


def fold(core: GridCore, state: GridState, inputs: list[Inbound[Any]]) -> tuple[GridState, dict[int, list[bytes]]]:
    """Fold the inputs; every input's outputs as bytes, by its sequence."""
    outputs: dict[int, list[bytes]] = {}
    for inbound in inputs:
        state, out = core.step(state, inbound)
        outputs[inbound.seq] = [encode(o) for o in out]
    return state, outputs


def test_a_replay_from_the_last_full_state_before_any_moment_ends_like_a_fresh_replay(bounded: Session) -> None:
    h = bounded.harness
    fresh_core = GridCore(h.cfg, h.market)
    fresh, fresh_out = fold(fresh_core, fresh_core.initial_state(), bounded.inputs)
    assert fresh == h.gst
    recorded = {ev.input_seq: encode(ev) for ev in bounded.states}
    for k in range(1, 8):
        moment = bounded.inputs[len(bounded.inputs) * k // 8].seq
        stored = [msgspec.json.decode(encode(ev), type=StrategyState) for ev in bounded.states if ev.input_seq <= moment]
        assert stored[-1].state is None, "the moment is not right after a full state: the case is too easy"
        anchor = next(ev for ev in reversed(stored) if ev.state is not None)
        assert anchor.input_seq < stored[-1].input_seq
        core = GridCore(h.cfg, h.market)
        start = msgspec.convert(anchor.state, GridState)
        state, out = fold(core, start, [i for i in bounded.inputs if i.seq > anchor.input_seq])
        assert state == fresh
        assert out == {seq: o for seq, o in fresh_out.items() if seq > anchor.input_seq}  # byte for byte
        assert all(recorded[seq] in o for seq, o in out.items() if seq in recorded)  # and what was published


def test_sqt_replay_from_a_file_starts_at_the_last_full_state_not_the_last_message(bounded: Session, tmp_path: Path) -> None:
    subject = subjects.ops("grid", grid().instance, "state")
    path = tmp_path / "incident.jsonl"
    with path.open("wb") as fh:
        for n, ev in enumerate(bounded.states, start=1):
            fh.write(export.to_line("OPS", StoredMsg(n, subject, encode(ev), b"", ev.ts * 1_000_000)))
    compact = next(ev for ev in bounded.states[len(bounded.states) // 2 :] if ev.state is None)
    since = dt.datetime.fromtimestamp(compact.ts / 1000, dt.timezone.utc)
    anchor = asyncio.run(FromFile(path).start_state(grid(), since))
    assert anchor is not None and anchor.state is not None
    last_full = [ev for ev in bounded.states if ev.ts <= compact.ts and ev.state is not None][-1]
    assert (anchor.input_seq, anchor.ts) == (last_full.input_seq, last_full.ts) and anchor.input_seq < compact.input_seq
    assert msgspec.convert(anchor.state, GridState).seq == anchor.input_seq
    # Before the first state: no starting point, but the market rules of the first full one.
    early = asyncio.run(FromFile(path).start_state(grid(), dt.datetime.fromtimestamp(0, dt.timezone.utc)))
    assert early is not None and early.state is None and early.input_seq == 0


def test_position_and_fills_of_a_compact_event_are_the_venues(bounded: Session) -> None:
    h = bounded.harness
    last = bounded.states[-1]
    assert (last.position, last.fills) == (h.venue_position(), h.gst.fills) and last.fills > 0
    assert last.position == h.grid_position() and isinstance(last.position, D)
