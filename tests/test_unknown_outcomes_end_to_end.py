"""Unknown outcomes, played out: the grid, the real executor and the exchange's engine in one loop
(testkit/flaky.py), with a venue that loses answers and delays requests when told. Each race ends
with the grid's position and fills equal to the venue's and no client id placed twice."""

from __future__ import annotations

from decimal import Decimal

from schemas.account import Position
from schemas.ops import VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.lattice import client_order_id
from testkit.flaky import Loop
from testkit.grid import SYMBOL, T0

GRID = GridConfig(instance="race", mode="long", levels=2, spacing=Decimal("0.01"), notional=Decimal(100), max_open_orders=4)


def settle(loop: Loop, prices: list[str]) -> None:
    for p in prices:
        loop.tick(p)
        assert loop.problems() == [], loop.problems()


def first_buy(loop: Loop) -> str:
    [cid] = [s.client_order_id for s in loop.gst.slots if s.client_order_id and s.side == "buy" and s.index == -1]
    return cid


def test_a_create_that_times_out_but_landed_is_booked_and_never_placed_again() -> None:
    loop = Loop(GRID)
    loop.start()
    cid = client_order_id(loop.prefix, "open", -1, 1)
    loop.venue.script.lost_answer.add(cid)  # the venue took it; the executor never heard
    settle(loop, ["100", "100", "100"])
    assert loop.venue.creates[cid] == 1
    settle(loop, ["99", "98.9", "98.5", "100"])  # it fills: the grid books it, sells it one level up
    assert loop.gst.fills >= 1 and loop.venue_fills >= 1


def test_a_create_that_lands_after_the_command_expired_is_booked_not_refused() -> None:
    loop = Loop(GRID)
    loop.start()
    cid = client_order_id(loop.prefix, "open", -1, 1)
    loop.venue.script.land_later[cid] = 3  # stuck on its way for three prints ...
    loop.venue.script.outage_after_stuck = 6  # ... and then the venue answers nothing at all
    loop.tick("100")
    loop.wall_ms += 60_000  # the executor's clock runs far past the command's time-to-live
    settle(loop, ["100", "100", "100", "100", "100", "100"])
    assert loop.engine.order_view(loop.est, "main", cid, None) is not None  # it landed ...
    assert loop.venue.creates.get(cid, 0) == 0  # ... from the first request, never sent again
    assert all(s.client_order_id != cid or s.phase in ("open", "pending") for s in loop.gst.slots)
    settle(loop, ["98.9", "100"])


def test_a_fill_while_the_cancel_is_on_its_way_is_booked_once() -> None:
    loop = Loop(GRID)
    loop.start()
    settle(loop, ["100"])
    cid = first_buy(loop)
    loop.venue.script.slow_cancel.add(cid)
    settle(loop, ["104", "98.9", "100"])  # trailing up cancels the buy; the price dips through it first
    assert loop.gst.fills >= 1


def test_a_first_start_snapshot_that_races_a_fill_books_it_once() -> None:
    loop = Loop(GRID)
    cid = client_order_id(loop.prefix, "open", -1, 1)
    # An earlier run left an open buy; it fills while the new run starts up.
    from venues.protocol import OrderRequest
    from venues.sim.journal import Place

    loop.tick("100")
    loop.venue_apply(
        Place(account="main", order=OrderRequest(symbol=SYMBOL, client_order_id=cid, side="buy", amount=Decimal(1), price=Decimal(99)))
    )
    listed = loop.engine.order_view(loop.est, "main", cid, None)
    assert listed is not None and listed.status == "open"
    settle_free = loop.gseq  # the input sequence the snapshot reflects
    loop.tick("98.9")  # it fills before the snapshot reaches the grid (its event is early)
    snapshot = VenueSnapshot(
        id="s", component="grid", instance="race", venue="sim", account="main", symbol=SYMBOL,
        orders=[listed], positions=[Position(id="p", venue="sim", account="main", symbol=SYMBOL, ts=T0, ts_local=T0)],
        input_seq=settle_free, ts=T0,
    )  # fmt: skip
    loop.start(snapshot)
    settle(loop, ["99", "100"])
    assert loop.gst.fills == loop.venue_fills >= 1  # the early fill, booked once, and what came after
