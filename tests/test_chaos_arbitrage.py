"""Crash recovery of the funding arbitrage end to end: SIGKILL it, the executor and the exchange at
random moments while sagas are in flight (testkit/chaos_arb.py)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from testkit import chaos_arb

KILLS = 12


def comparable(state):
    return msgspec.structs.replace(state, published_ts=0)


@pytest.mark.e2e
@pytest.mark.timeout(600)
async def test_kill_9_during_sagas_never_sends_a_leg_twice_never_stays_naked_and_ends_where_the_venue_is(tmp_path: Path) -> None:
    run = await chaos_arb.run(tmp_path, seed=11, kills=KILLS)

    assert sum(run.kills.values()) == KILLS and all(n > 0 for n in run.kills.values()), run.kills
    assert run.state.entries >= 2 and run.state.exits >= 2, "the session must trade for the checks to mean anything"
    # No client order id ever became two orders at the exchange.
    assert run.orders_by_cid and all(len(ids) == 1 for ids in run.orders_by_cid.values())
    # Never naked beyond the limit, plus the time a killed component takes to come back.
    allowance = chaos_arb.NAKED_MS + 15_000
    longest = max((b - a for a, b in run.naked), default=0)
    assert longest <= allowance, (longest, run.naked)
    # Flat, and exactly what the exchange says.
    assert chaos_arb.flat(run.state)  # (a spot leg may keep less than a lot: the interest of a margin short, repaid rounded up)
    assert (run.venue_spot, run.venue_perp) == chaos_arb.held(run.state) and run.venue_perp == 0
    # The recovered state is a fresh fold of its whole input (DESIGN rule 4a).
    assert comparable(run.state) == comparable(run.replayed)
