"""Property tests: the grid core against the simulated exchange's engine over random sessions."""

from __future__ import annotations

import random
from decimal import Decimal

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.market import Ticker
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from testkit import fresh
from testkit.grid import Harness, drive, sim_config

# A price path: moves in basis points and traded volumes; integers shrink and spread better than floats.
moves = st.lists(
    st.tuples(st.integers(-60, 60).map(lambda bp: bp / 10_000), st.integers(1, 600).map(lambda v: v / 1_000)),
    min_size=30,
    max_size=250,
)


@st.composite
def grids(draw: st.DrawFn, mode: str | None = None) -> GridConfig:
    mode = mode or draw(st.sampled_from(["long", "short", "neutral"]))
    levels = draw(st.integers(1, 5))
    units = levels * (2 if mode == "neutral" else 1)
    return GridConfig(
        instance="prop",
        mode=mode,  # type: ignore[arg-type]
        levels=levels,
        spacing=Decimal(draw(st.sampled_from(["0.001", "0.002", "0.005"]))),
        notional=Decimal(draw(st.sampled_from(["5", "50", "300"]))),
        trail_levels=draw(st.integers(0, 3)),
        max_open_orders=units + draw(st.integers(0, 5)),
        post_only=draw(st.booleans()),
    )


@settings(max_examples=80, deadline=None)
@given(grid=grids(), path=moves, latency=st.booleans())
def test_no_slot_ever_has_two_live_orders_and_every_fill_gets_its_counter_order(
    grid: GridConfig, path: list[tuple[float, float]], latency: bool
) -> None:
    """Checked at every tick (tests/grid_harness.py invariant_problems): at most one live order
    per slot at the venue; every filled slot rests exactly one closing order (unless its
    opening order is still working or the closing price would take); no client order id is
    placed twice; the grid's position equals the venue's; no buy at or above the best ask and
    no sell at or below the best bid, post-only or its plain-limit fallback alike."""
    drive(Harness(grid, sim_config(), latency=latency), path)


# Found by hypothesis: slot 15 bought one unit (0.049); slot 14's closing order (0.056: a unit plus
# dust it hosted) filled 0.050 and was canceled when the price went through it, so its 0.006 joined
# slot 15; then slot 16's closing order filled 0.040 of 0.049 and was canceled, so its 0.009 joined
# slot 15 as well: one unit plus two pieces of dust (0.064), each moved there as designed.
TWO_DUSTS_GRID = GridConfig(
    instance="prop",
    mode="long",
    levels=5,
    spacing=Decimal("0.001"),
    spacing_type="geometric",
    notional=Decimal(5),
    trail_levels=1,
    max_open_orders=6,
    post_only=False,
)
TWO_DUSTS_PATH = [
    (0.0028, 0.149), (-0.0023, 0.527), (0.0003, 0.511), (0.0037, 0.378), (0.0054, 0.099), (0.0052, 0.133),
    (-0.0045, 0.131), (0.0015, 0.043), (0.0041, 0.376), (0.0041, 0.259), (-0.0004, 0.312), (-0.0054, 0.154),
    (0.0054, 0.099), (0.0008, 0.04), (0.0044, 0.206), (-0.0041, 0.485), (-0.0008, 0.401), (0.004, 0.546),
    (-0.0051, 0.512), (0.002, 0.093), (-0.0052, 0.192), (-0.0047, 0.378), (-0.0054, 0.42), (-0.005, 0.229),
    (0.0018, 0.541), (0.0013, 0.12), (-0.0041, 0.118), (-0.002, 0.429), (0.0, 0.546), (-0.006, 0.599),
    (-0.0049, 0.503), (-0.0004, 0.05), (-0.0003, 0.315), (0.006, 0.164),
]  # fmt: skip


def dust_at(h: Harness, index: int) -> Decimal:
    """More than a long slot at `index` can hold when what it holds is too small to close (below
    the minimums at its closing price, one level above, so below them at its own)."""
    assert h.gst.anchor is not None
    price = h.core.lattice(h.gst.anchor).price(index)
    return max(h.market.min_amount, h.market.min_notional / price) + h.market.lot_size


def long_inventory_bounded(grid: GridConfig, h: Harness) -> None:
    held = [s for s in h.gst.slots if s.holding > 0]
    assert len(held) <= grid.levels
    assert all(s.holding >= 0 for s in h.gst.slots)
    assert h.gst.anchor is not None
    lat = h.core.lattice(h.gst.anchor)
    # Inventory moves between slots only as dust (booking.absorb_dust): a remainder too small to
    # close, from the slot whose order event left it, into a neighbour or the unassigned position.
    for origin, _, amount in h.dust_moves:
        assert 0 < amount <= dust_at(h, origin), (origin, amount)
    # Each filled level holds what its own order at its price buys for `notional`, plus the dust
    # other slots moved into it since it last held nothing. That dust is not one piece at most:
    # a host keeps hosting while it holds (here slot 15 took 0.006 from slot 14, then 0.009 from
    # slot 16), and every piece is real inventory its closing order sells with the rest. A slot
    # holding a second unit of its own (two opening orders filled, a fill booked twice) fails.
    for s in held:
        assert s.holding <= grid.notional / lat.price(s.index) + h.moved_in.get(s.index, 0), (s.index, s.holding)
    # The venue holds exactly that, plus the dust that found no host.
    bound = sum(grid.notional / lat.price(s.index) + h.moved_in.get(s.index, 0) for s in held)
    assert 0 <= h.venue_position() <= bound + h.gst.unassigned


@settings(max_examples=50, deadline=None)
@given(grid=grids(mode="long"), path=moves, latency=st.booleans())
@example(grid=TWO_DUSTS_GRID, path=TWO_DUSTS_PATH, latency=False)
def test_long_inventory_never_exceeds_the_levels_below_the_anchor(grid: GridConfig, path: list[tuple[float, float]], latency: bool) -> None:
    drive(Harness(grid, sim_config(), latency=latency), path, lambda h: long_inventory_bounded(grid, h))


def test_a_slot_hosts_dust_from_two_neighbours_and_the_bound_counts_both() -> None:
    """The case above without hypothesis: the session really moves two pieces of dust into one
    slot, so the example keeps covering it."""
    h = Harness(TWO_DUSTS_GRID, sim_config())
    hosted_twice = False
    price = 100.0
    for move, volume in TWO_DUSTS_PATH:
        price *= 1 + move
        h.tick(f"{price:.2f}", f"{volume:.3f}")
        assert h.invariant_problems() == []
        long_inventory_bounded(TWO_DUSTS_GRID, h)
        assert h.gst.anchor is not None
        lat = h.core.lattice(h.gst.anchor)
        for s in h.gst.slots:  # above one unit plus one piece of dust (the bound before this case)
            hosted_twice |= s.holding > TWO_DUSTS_GRID.notional / lat.price(s.index) + dust_at(h, s.index)
    assert hosted_twice


@settings(max_examples=30, deadline=None)
@given(grid=grids(mode="short"), path=moves)
def test_short_is_the_mirror_never_long(grid: GridConfig, path: list[tuple[float, float]]) -> None:
    def bounded(h: Harness) -> None:
        assert len([s for s in h.gst.slots if s.holding < 0]) <= grid.levels
        assert all(s.holding <= 0 for s in h.gst.slots)
        assert h.venue_position() <= 0  # the engine's signed contracts

    drive(Harness(grid, sim_config()), path, bounded)


@settings(max_examples=30, deadline=None)
@given(grid=grids(), path=moves, latency=st.booleans())
def test_the_same_inputs_give_the_same_state_and_decisions(grid: GridConfig, path: list[tuple[float, float]], latency: bool) -> None:
    a, b = Harness(grid, sim_config(), latency=latency), Harness(grid, sim_config(), latency=latency)
    drive(a, path)
    drive(b, path, aim=False)
    assert msgspec.json.encode(a.gst) == msgspec.json.encode(b.gst)
    assert [p.id for p in a.placed] == [p.id for p in b.placed]


class NoFastPath(GridCore):
    """The same core, deciding on every tick: what the fast path skips must change nothing."""

    def on_ticker(self, st, ev: Ticker, seq: int):
        return super().on_ticker(msgspec.structs.replace(st, quiet=None), ev, seq)


@settings(max_examples=40, deadline=None)
@given(grid=grids(), path=moves)
def test_the_quiet_tick_fast_path_never_skips_a_decision(grid: GridConfig, path: list[tuple[float, float]]) -> None:
    fast = Harness(grid, sim_config())
    slow = Harness(grid, sim_config())
    slow.core = NoFastPath(grid, slow.market)
    price = 100.0
    for move, volume in path:
        price *= 1 + move
        fast.tick(f"{price:.2f}", f"{volume:.3f}")
        slow.tick(f"{price:.2f}", f"{volume:.3f}")
        assert [p.id for p in fast.placed] == [p.id for p in slow.placed]
        assert [c.id for c in fast.canceled] == [c.id for c in slow.canceled]
        strip = dict(quiet=None, published_ts=0)
        assert msgspec.structs.replace(fast.gst, **strip) == msgspec.structs.replace(slow.gst, **strip)


def test_a_replay_from_any_point_reaches_the_same_state() -> None:
    """Checkpoint anywhere, fold the rest: the same state as folding everything (replay = recovery)."""
    grid = GridConfig(instance="prop", mode="neutral", levels=3, spacing=Decimal("0.002"), notional=Decimal(50), max_open_orders=8)
    h = Harness(grid, sim_config())
    price = 100.0
    for i in range(300):
        price *= 1 + (0.003 if (i // 25) % 2 else -0.003)
        h.tick(f"{price:.2f}", "0.2")
    core = GridCore(grid, h.market)
    inputs = h.inputs
    assert h.gst.fills > 5  # the session traded, so the replay has something to get right
    for cut in (0, 1, len(inputs) // 3, len(inputs) - 1):
        state = core.initial_state()
        for inbound in inputs[:cut]:
            state, _ = core.step(state, inbound)
        checkpoint = msgspec.json.decode(msgspec.json.encode(state), type=type(state))  # through the wire format
        for inbound in inputs[cut:]:
            checkpoint, _ = core.step(checkpoint, inbound)
        assert checkpoint == h.gst


def test_a_session_decides_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    rnd = random.Random(3)
    path = [(rnd.randint(-40, 40) / 10_000, rnd.randint(50, 600) / 1_000) for _ in range(300)]
    grid = GridConfig(instance="fresh", mode="neutral", levels=4, spacing=Decimal("0.002"), notional=Decimal(50), max_open_orders=12)
    job = fresh.grid_job(grid, path, latency=True)
    here = Harness(grid, sim_config(), latency=True)
    drive(here, path, aim=False)
    assert here.gst.fills > 5  # the session traded: there is something to get right
    assert fresh.digest("grid", job) == fresh.digest_elsewhere("grid", job)
