"""The grid's levels on the page survive compact state events (docs/adr/0024-bounded-state-events.md):
a compact one (no state, no levels) updates a grid's numbers and keeps the levels of its last full
one, live, on the first screen and in the page a real browser draws."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from gateway import frames
from gateway.frames import Market
from gateway.view import View
from schemas.ops import GridLevel, StrategyState
from tests.test_page import CHROMIUM, Page, page, store, until  # noqa: F401 - `page` is the browser fixture

BTC = Market("sim", "BTC/USDT:USDT")
LEVELS = [GridLevel(index=k, price=Decimal(95 + k), side="buy" if k < 0 else "sell" if k > 0 else None) for k in range(-2, 3)]


def full(seq: int, fills: int = 0, instance: str = "g", levels: list[GridLevel] = LEVELS) -> StrategyState:
    return StrategyState(
        id=f"state:grid:{instance}:{seq}",
        component="grid",
        instance=instance,
        venue=BTC.venue,
        account="main",
        symbol=BTC.symbol,
        status="running",
        input_seq=seq,
        fills=fills,
        state={"seq": seq},
        levels=levels,
        ts=1_700_000_000_000 + seq,
    )


def compact(seq: int, fills: int = 0, instance: str = "g") -> StrategyState:
    return replace(full(seq, fills, instance), state=None, levels=[])


def grid_frame(view: View, seq: int, event: StrategyState) -> Any:
    routed = view.apply("OPS", seq, event)
    assert routed is not None and routed.frame.type == "grid_state"
    return json.loads(frames.encode(routed.frame))["data"]


def first_screen_grids(view: View) -> list[Any]:
    return [json.loads(frames.encode(f))["data"] for f in view.first_screen(BTC) if f.type == "grid_state"]


def test_a_compact_state_keeps_the_last_full_levels_and_updates_the_numbers() -> None:
    view = View()
    assert len(grid_frame(view, 1, full(1))["levels"]) == 5
    live = grid_frame(view, 2, compact(2, fills=3))
    assert live["fills"] == 3 and live["input_seq"] == 2 and [lv["price"] for lv in live["levels"]] == ["93", "94", "95", "96", "97"]
    [shown] = first_screen_grids(view)
    assert shown == live  # a browser arriving now sees the same
    # Another instance's compact state has no full one before it: no levels to keep.
    assert grid_frame(view, 3, compact(3, instance="h"))["levels"] == []
    # A full state with no levels (no anchor yet) clears them; the next compact keeps none.
    assert grid_frame(view, 4, full(4, levels=[]))["levels"] == []
    assert grid_frame(view, 5, compact(5))["levels"] == []
    # A newer full state's levels replace the older ones.
    assert len(grid_frame(view, 6, full(6, levels=LEVELS[:2]))["levels"]) == 2
    assert len(grid_frame(view, 7, compact(7))["levels"]) == 2


def test_an_old_full_event_still_draws_and_the_frame_never_carries_the_state() -> None:
    old = msgspec.json.decode(msgspec.json.encode(full(1)))
    event = msgspec.convert(old, StrategyState)
    data = grid_frame(View(), 1, event)
    assert len(data["levels"]) == 5 and "state" not in data


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_page_keeps_drawing_the_levels_through_compact_states(page: Page) -> None:  # noqa: F811
    tab, bus, errors = page.tab, page.bus, page.errors
    await until(tab, "window.sqt && sqt.state() === 'live' && sqt.candles() === 100")
    await store(bus, full(1))
    await until(tab, "sqt.levelLines() === 5")
    await store(bus, compact(2, fills=1), compact(3, fills=2))
    await until(tab, "sqt.lastSeq().OPS === 3")
    assert await tab.evaluate("sqt.levelLines()") == 5
    await tab.reload()  # the first screen after compact states
    await until(tab, "window.sqt && sqt.state() === 'live' && sqt.candles() === 100 && sqt.levelLines() === 5")
    await store(bus, full(4, levels=LEVELS[:3]))
    await until(tab, "sqt.levelLines() === 3")
    assert errors == []
