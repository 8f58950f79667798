"""Crash recovery end to end: SIGKILL the grid, the executor and the exchange at random moments."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from strategies.grid.core import GridCore
from testkit import chaos

STEPS = 160
KILLS = 24


def comparable(state):
    """The state minus what only says when it was last published or woken."""
    return msgspec.structs.replace(state, quiet=None, published_ts=0)


@pytest.mark.e2e
@pytest.mark.timeout(900)
async def test_kill_9_anything_anytime_and_the_grid_ends_where_an_uninterrupted_run_does(tmp_path: Path) -> None:
    reference = await chaos.run(tmp_path / "reference", seed=7, steps=STEPS, kills=0)
    killed = await chaos.run(tmp_path / "chaos", seed=7, steps=STEPS, kills=KILLS)

    assert sum(killed.kills.values()) > KILLS  # some kill points take two processes
    assert all(killed.kills[c] > 0 for c in chaos.COMPONENTS), killed.kills
    assert all(n > 0 for n in killed.patterns.values()), killed.patterns  # one, two at once, while recovering
    assert killed.missed == 0  # every kill hit a live process
    # Each kill point did what its pattern says: both of two at once hit, the second of "while
    # recovering" came after the first victim was connected again; and kills land inside ticks.
    assert killed.shown == killed.patterns, (killed.shown, killed.patterns)
    n = killed.patterns
    assert killed.hits == n["one"] + 2 * (n["two at once"] + n["while recovering"]), (killed.hits, n)
    assert killed.mid_tick > 0, killed.mid_tick
    assert reference.state.fills > 10, "the session must trade for the comparison to mean anything"

    # No client order id ever became two orders at the venue.
    for run in (reference, killed):
        assert all(len(ids) == 1 for ids in run.orders_by_cid.values())
    # No fill is missing from the grid: its count and position are the venue's.
    for run in (reference, killed):
        assert run.state.fills == run.venue_fills
        assert GridCore.position(run.state) == run.venue_position
        live = {s.client_order_id for s in run.state.slots if s.client_order_id}
        assert live == run.venue_open
    # The recovered state is a fresh fold of the grid's whole input (DESIGN rule 4a) ...
    assert comparable(killed.state) == comparable(killed.replayed)
    # ... and equals the run that was never interrupted.
    assert comparable(killed.state) == comparable(reference.state)
