"""The core's inputs, one at a time: which events it takes, what each changes in the state, when a
tick takes the fast path, and when the state is published (pure: events in, state and outputs out)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from msgspec.structs import replace

from bus.contract import InputRejected
from schemas.account import Liquidation, OrderUpdate, Position
from schemas.commands import PlaceOrder
from schemas.ops import BreakerChange, ControlAction, ControlCommand, StrategyState, VenueSnapshot
from schemas.sanity import PriceBand
from strategies.grid.booking import BOOKED_KEPT
from strategies.grid.core import EARLY_KEPT, PUBLISH_EVERY_MS, GridCore
from strategies.grid.diff import STRAY_PATIENCE_MS
from strategies.grid.lattice import client_order_id, client_prefix
from strategies.grid.state import Booked, Early, GridSlot, GridState, Stray
from testkit.events import order_update, ticker
from testkit.grid import MARKET, Driver, T, cancels, grid, places

PREFIX = client_prefix("g1")


def published(out: list[Any]) -> list[StrategyState]:
    return [o for o in out if isinstance(o, StrategyState)]


def price(out: list[Any], p: int) -> PlaceOrder:
    return next(o for o in places(out) if o.price == D(p))


def control(d: Driver, action: ControlAction, component: str = "grid", instance: str = "g1") -> list[Any]:
    return d.feed(
        ControlCommand(id=f"c{d.seq}", target_component=component, target_instance=instance, action=action, operator="ops", ts=d.ts)
    )


def breaker(d: Driver, state: str, scope: str = "global", ts: int | None = None) -> list[Any]:
    change = BreakerChange(id=f"b{d.seq}", instance="risk", scope=scope, state=state, previous="ok", reason="r", ts=ts or d.ts)  # type: ignore[arg-type]
    return d.feed(change)


def snapshot(orders: list[OrderUpdate] | None = None, **kw: Any) -> VenueSnapshot:
    base: dict[str, Any] = dict(id="s", component="grid", instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT", ts=T)
    return VenueSnapshot(**(base | {"orders": orders or []} | kw))


def ours(role: str, index: int, gen: int, status: str, filled: str, side: str = "buy", **kw: Any) -> OrderUpdate:
    cid = client_order_id(PREFIX, role, index, gen)  # type: ignore[arg-type]
    return order_update(cid, status, filled, kw.pop("amount", "10"), kw.pop("price", "90"), side=side, **kw)


# ------------------------------------------------------------------ the first state


def test_the_first_state_is_the_configuration_with_nothing_known_yet() -> None:
    assert GridCore(grid(mode="long"), MARKET).initial_state() == GridState(
        instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT", mode="long", market=MARKET, anchor=D(100)
    )


# ------------------------------------------------------------------ tickers


# A stray whose minute is up: a full decision lets it go, the fast path leaves it to the next one.
LATE = Stray(
    client_order_id=client_order_id(PREFIX, "open", -3, 99), index=-3, side="buy", canceling=True, canceled_at=T - STRAY_PATIENCE_MS
)


@pytest.mark.parametrize(
    "first, quiet",
    [
        (("100", "99.9", "100.1"), ("100", "90", "110")),  # the bounds are 100 < ask <= 110, 90 <= bid < 100, 100 <= last < 110
        (("100.5", "100.5", "100.5"), ("100.7", "100.7", "100.7")),  # a book with no spread stays quiet too
    ],
)
def test_a_tick_inside_the_quiet_bounds_even_on_their_edges_folds_in_the_price_and_nothing_else(
    first: tuple[str, str, str], quiet: tuple[str, str, str]
) -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick(*first)
    d.state = before = replace(d.state, strays=[LATE])
    assert d.tick(*quiet) == []
    last, bid, ask = (D(p) for p in quiet)
    assert d.state == replace(before, last_price=last, bid=bid, ask=ask, ts=d.ts, tick_ts=d.ts, seq=d.seq)


def test_a_tick_five_seconds_after_the_last_publish_is_decided_in_full_and_published() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    d.state = replace(d.state, strays=[LATE])
    d.ts = d.state.published_ts + PUBLISH_EVERY_MS - 500  # the next tick comes exactly five seconds after it
    out = d.tick("100.2", bid="99.8", ask="100.3")
    assert d.state.strays == [] and out == [d.core.state_event(d.state, full=False)]  # a price refresh is compact


def test_the_fast_path_stays_within_the_prices_the_guard_accepts() -> None:
    d = Driver(grid(mode="long", levels=1, price_band=PriceBand(max_jump=D("0.05"))))
    d.tick("100")  # the next level up is 110, but the guard takes at most 105 within its window
    with pytest.raises(InputRejected, match=r"^ask 106 is more than 5% away from the last price 100 "):
        d.feed(ticker("100", ts=d.ts + 500, bid=D("99.9"), ask=D("106")))


@pytest.mark.parametrize("bid, ask, taken", [("100", "100.1", "close_long"), ("99.9", "100", "close_short")])
def test_a_tick_that_makes_a_resting_order_take_liquidity_is_decided_not_skipped(bid: str, ask: str, taken: str) -> None:
    d = Driver(grid())
    out = d.tick("100")
    close_long = places(d.order(price(out, 90), "closed", filled=str(price(out, 90).amount)))[0]  # a sell at 100
    close_short = places(d.order(price(out, 110), "closed", filled=str(price(out, 110).amount)))[0]  # a buy at 100
    out = d.tick("100", bid=bid, ask=ask)
    assert [c.client_order_id for c in cancels(out)] == [{"close_long": close_long, "close_short": close_short}[taken].client_order_id]


def test_a_bid_reaching_a_resting_sell_is_decided_even_with_the_last_price_far_above() -> None:
    d = Driver(grid())
    out = d.tick("100")
    [close_long] = places(d.order(price(out, 90), "closed", filled=str(price(out, 90).amount)))
    assert cancels(d.tick("110", bid="99.9", ask="100.1")) == []
    assert [c.client_order_id for c in cancels(d.tick("110", bid="100", ask="100.1"))] == [close_long.client_order_id]


def test_the_last_price_reaching_the_next_level_is_decided_and_can_move_the_center() -> None:
    d = Driver(grid(mode="long", levels=1, trail_levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    assert d.tick("110", bid="109.9", ask="110.1") == [] and d.state.center == 0  # one level up: within trail_levels
    out = d.tick("120", bid="109.9", ask="110.1")
    assert d.state.center == 2 and [c.client_order_id for c in cancels(out)] == [buy.client_order_id]
    assert published(out) == [d.core.state_event(d.state, full=False)]  # a decision that acted is published


def test_tickers_of_another_market_or_older_than_the_last_are_ignored_and_one_as_old_is_taken() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    for ev in (ticker("101", ts=d.ts + 1, venue="other"), ticker("101", ts=d.ts + 1, symbol="ETH/USDT:USDT"), ticker("101", ts=d.ts - 1)):
        assert d.feed(ev) == [] and d.state == before
    d.feed(ticker("100.2", ts=d.ts, bid=D("100.1"), ask=D("100.3")))  # as old as the last one: taken
    assert (d.state.last_price, d.state.bid, d.state.ask, d.state.ts, d.state.seq) == (D("100.2"), D("100.1"), D("100.3"), d.ts, d.seq)


def test_a_ticker_without_a_book_uses_its_last_price_for_both_sides() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    d.feed(ticker("104", ts=d.ts + 500, bid=None, ask=None))
    assert (d.state.last_price, d.state.bid, d.state.ask) == (D(104), D(104), D(104))


def test_a_ticker_beyond_the_price_band_is_refused_with_the_reason() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    with pytest.raises(InputRejected, match=r"^last 250 is more than 100% away from the last price 100 "):
        d.feed(ticker("250", ts=d.ts + 1))
    assert d.state == before


def test_a_status_change_alone_is_published() -> None:
    d = Driver(grid(mode="long", levels=1), snapshot=snapshot(breakers={"global": BreakerChange(
        id="b", instance="risk", scope="global", state="halted", previous="ok", reason="r", ts=T)}))  # fmt: skip
    out = d.tick("100")
    assert d.state.status == "halted" and out == [d.core.state_event(d.state)]


def test_the_state_is_published_again_five_seconds_after_the_last_time() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    d.ts = d.state.published_ts + PUBLISH_EVERY_MS - 500 - 1
    assert d.tick("100.2", bid="99.8", ask="100.3") == []  # 4999 ms: quiet
    assert published(d.tick("100.2", bid="99.8", ask="100.3")) == [d.core.state_event(d.state, full=False)]  # 5499 ms


# ------------------------------------------------------------------ order events


def test_order_events_of_another_account_venue_or_market_are_ignored() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    before = d.state
    for kw in (dict(account="other"), dict(venue="other"), dict(symbol="ETH/USDT:USDT")):
        ev = order_update(buy.client_order_id, "closed", str(buy.amount), str(buy.amount), "90", side="buy", ts=d.ts + 1, **kw)
        assert d.feed(ev) == [] and d.state == before


def test_an_acknowledged_order_is_open_with_the_venues_id_and_the_state_is_published() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    out = d.order(buy, "open")
    assert d.slot(-1) == GridSlot(
        index=-1,
        phase="open",
        generation=1,
        client_order_id=buy.client_order_id,
        order_id=f"o{buy.client_order_id}",
        role="open",
        side="buy",
        price=D(90),
        amount=buy.amount,
        status="open",
        sent_seq=2,
    )
    assert (d.state.ts, d.state.seq) == (d.ts, d.seq) and out == [d.core.state_event(d.state, full=False)]


def test_a_filled_order_books_its_inventory_and_its_closing_order_is_sent_at_that_input() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    [close] = places(d.order(buy, "closed", filled=str(buy.amount)))
    assert d.slot(-1) == GridSlot(
        index=-1,
        phase="filled",
        generation=2,
        client_order_id=close.client_order_id,
        role="close",
        side="sell",
        price=D(100),
        amount=buy.amount,
        status="pending",
        sent_seq=d.seq,
        holding=buy.amount,
        entry_price=D(90),
    )
    assert d.state.booked == {buy.client_order_id: Booked(buy.amount, D(90) * buy.amount)}


def test_an_ended_order_frees_its_slot_and_the_next_one_starts_clean() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    [again] = places(d.order(buy, "canceled"))
    assert d.slot(-1) == GridSlot(
        index=-1,
        phase="pending",
        generation=2,
        client_order_id=again.client_order_id,
        role="open",
        side="buy",
        price=D(90),
        amount=buy.amount,
        status="pending",
        sent_seq=d.seq,
    )


def test_an_expired_order_backs_its_slot_off() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    assert places(d.order(buy, "expired")) == []
    assert d.slot(-1) == GridSlot(index=-1, generation=1, sent_seq=2, rejects=1, retry_at=d.ts + 1_000)


def test_a_reduce_only_refusal_retries_at_once_keeping_the_slots_counts() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    [close] = places(d.order(buy, "closed", filled=str(buy.amount)))
    d.state = replace(d.state, slots=[replace(d.slot(-1), post_only_rejects=1, rejects=2)])
    [again] = places(d.order(close, "rejected", reason="reduce_only_would_increase"))
    slot = d.slot(-1)
    assert (again.side, again.price, again.post_only) == ("sell", D(100), True)
    assert (slot.client_order_id, slot.post_only_rejects, slot.rejects, slot.retry_at) == (again.client_order_id, 1, 2, 0)


def test_a_late_acknowledgement_of_an_order_being_canceled_keeps_it_canceling() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    control(d, "pause")
    assert d.slot(-1).status == "canceling"
    out = d.order(buy, "open")
    assert (d.slot(-1).status, d.slot(-1).order_id) == ("canceling", f"o{buy.client_order_id}")
    assert cancels(out) == []  # its cancel is on its way: not sent again


def test_a_partial_fill_of_a_live_order_stays_in_its_slot_even_below_the_minimum() -> None:
    d = Driver(grid(mode="long", levels=2, notional=D(20)))
    buy90 = price(d.tick("100"), 90)
    d.order(buy90, "open", filled="0.002")  # 0.2 USDT: dust, but the order is still working
    assert d.slot(-1).holding == D("0.002") and d.state.unassigned == 0


def test_a_holding_below_the_minimum_amount_left_by_an_ended_order_is_unassigned() -> None:
    d = Driver(grid(mode="long", levels=1), market=replace(MARKET, min_amount=D(2)))
    [buy] = places(d.tick("100"))
    d.order(buy, "canceled", filled="1")  # 1 is below the 2 the market trades at least
    assert (d.slot(-1).holding, d.state.unassigned) == (0, D(1))


def test_an_adopted_order_without_a_price_books_its_fill_before_there_is_a_lattice() -> None:
    cid = client_order_id(PREFIX, "open", -1, 3)
    resting = replace(order_update(cid, "open", "0", "1", "90", side="buy", order_id="a"), price=None)
    d = Driver(grid(mode="long", levels=1, anchor=None), snapshot=snapshot([resting]))
    assert d.state.anchor is None
    d.feed(order_update(cid, "canceled", "0.001", "1", "90", side="buy", order_id="a", ts=T + 1, average=D(90)))
    assert d.state.fault is None
    assert d.slot(-1) == GridSlot(index=-1, phase="filled", generation=3, holding=D("0.001"), entry_price=D(90))


def test_more_order_events_before_the_snapshot_than_it_keeps_halt_the_grid_saying_why() -> None:
    d = Driver(grid(mode="long", levels=1), adopt=False)
    ev = ours("open", -1, 1, "open", "0")
    d.state = replace(d.state, early=[Early(i, ev) for i in range(EARLY_KEPT - 1)])
    assert d.feed(ev) == []  # the last one it keeps
    assert (len(d.state.early), d.state.early[-1], d.state.seq, d.state.fault) == (EARLY_KEPT, Early(d.seq, ev), d.seq, None)
    out = d.feed(ev)
    assert d.state.fault == f"OrderUpdate {ev.client_order_id}: ValueError: more than 2000 order events before the venue snapshot"
    assert d.state.halted and d.state.seq == d.seq and out == [d.core.state_event(d.state)]


def test_a_snapshot_the_core_cannot_adopt_halts_the_grid_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("cannot adopt this")

    monkeypatch.setattr("strategies.grid.core.adopt", broken)
    d = Driver(grid(mode="long", levels=1), adopt=False)
    d.feed(snapshot())
    assert (d.state.fault, d.state.halted, d.state.seq) == ("VenueSnapshot : RuntimeError: cannot adopt this", True, d.seq)


def test_a_fault_while_halted_with_nothing_to_cancel_is_still_published(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    control(d, "halt")
    d.order(buy, "canceled")

    def broken(*_args: Any) -> None:
        raise ArithmeticError("cannot book this")

    monkeypatch.setattr("strategies.grid.core.book_into", broken)
    out = d.feed(ours("open", -3, 1, "closed", "1", ts=d.ts + 1))
    assert "cannot book this" in (d.state.fault or "") and out == [d.core.state_event(d.state, full=False)]


# ------------------------------------------------------------------ orders no slot tracks


def test_an_order_of_this_run_is_booked_even_when_the_venue_dates_its_event_before_the_snapshot() -> None:
    d = Driver(grid(mode="long", levels=1))  # adopted at T: this run's generations start at 1
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.feed(order_update(buy.client_order_id, "closed", "1", str(buy.amount), "90", side="buy", ts=T))
    assert d.core.position(d.state) == D(1)


def test_an_order_of_an_earlier_run_reported_at_the_snapshots_time_is_in_the_snapshot() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.feed(ours("open", -1, 0, "closed", "1", ts=T))
    assert d.core.position(d.state) == 0 and d.state.fills == 0


def test_an_event_for_an_order_too_old_to_remember_is_counted_not_booked() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.state = replace(d.state, forgotten_below=5)
    d.feed(ours("open", -1, 4, "closed", "1", ts=T + 1))
    assert (d.state.stale_events, d.core.position(d.state), d.state.strays) == (1, 0, [])
    d.feed(ours("open", -1, 5, "closed", "1", ts=T + 2))  # not forgotten: booked
    assert (d.state.stale_events, d.core.position(d.state)) == (1, D(1))


def test_a_fill_after_an_orders_end_is_booked_as_a_stray_at_its_own_price() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    d.order(buy, "canceled", filled="2", fee_cost=D("0.1"))
    d.order(buy, "open", filled="5", fee_cost=D("0.3"))  # 3 more filled before the cancel: the venue says so late
    assert d.state.strays == [
        Stray(
            client_order_id=buy.client_order_id,
            order_id=f"o{buy.client_order_id}",
            index=-1,
            side="buy",
            filled=D(5),
            cost=D(450),
            fee=D("0.3"),
            canceling=True,
            canceled_at=d.ts,
        )
    ]
    assert (d.slot(-1).holding, d.slot(-1).entry_price) == (D(5), D(90))  # all of it bought at 90
    d.feed(order_update(buy.client_order_id, "open", "6", str(buy.amount), "90", side="buy", order_id=None, ts=d.ts + 1, average=D(95)))
    assert d.state.strays[0].order_id == f"o{buy.client_order_id}"  # an event without the venue's id keeps it
    assert (d.state.strays[0].filled, d.state.strays[0].cost, d.slot(-1).holding) == (D(6), D(570), D(6))


def test_the_fee_of_a_fill_after_an_orders_end_is_booked_once() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "canceled", filled="2", fee_cost=D("0.1"))  # 0.1 booked with the order's end
    d.order(buy, "open", filled="5", fee_cost=D("0.25"))  # the venue's cumulative fee: 0.15 more
    assert d.state.fees == D("0.25")


def test_a_stray_learns_the_venues_id_from_a_later_event() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.feed(order_update(buy.client_order_id, "open", "0", str(buy.amount), "90", side="buy", order_id=None, ts=d.ts + 1))
    assert d.state.strays[0].order_id is None
    d.feed(order_update(buy.client_order_id, "open", "1", str(buy.amount), "90", side="buy", order_id="v9", ts=d.ts + 2))
    assert d.state.strays[0].order_id == "v9"


def test_a_stray_fill_below_the_minimum_amount_joins_the_unassigned_position() -> None:
    d = Driver(grid(mode="long", levels=1), market=replace(MARKET, min_amount=D(2)))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.order(buy, "open")  # it landed after all: a stray
    d.order(buy, "canceled", filled="1")  # 1 is below the 2 the market trades at least
    assert (d.state.strays, d.state.unassigned, d.slot(-1).holding) == ([], D(1), 0)


def test_a_stray_that_says_nothing_new_at_a_level_with_no_slot_changes_no_slot() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    d.feed(ours("open", -5, 0, "open", "0", ts=T + 1))  # an earlier run's order, still resting far below
    assert d.state.fault is None and [s.index for s in d.state.strays] == [-5] and d.slot(-5) is None


def test_dust_from_a_stray_joins_the_unassigned_position() -> None:
    d = Driver(grid(mode="long", levels=1, notional=D(20)))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.order(buy, "open")  # it landed after all: a stray
    d.order(buy, "canceled", filled="0.002")  # 0.2 USDT: too small to close
    assert (d.state.strays, d.state.unassigned, d.slot(-1).holding) == ([], D("0.002"), 0)


def test_a_stray_fill_before_there_is_a_lattice_stays_in_its_slot() -> None:
    d = Driver(grid(mode="long", levels=1, anchor=None))
    d.feed(ours("open", -1, 0, "closed", "0.001", ts=T + 1))  # an earlier run's order, filled after the snapshot
    assert d.state.fault is None and d.slot(-1) == GridSlot(index=-1, phase="filled", holding=D("0.001"), entry_price=D(90))


def test_remembering_ended_orders_forgets_the_oldest_as_slot_orders_and_strays_end() -> None:
    d = Driver(grid(mode="long", levels=1))
    booked = {client_order_id(PREFIX, "open", 3, g): Booked(D(1)) for g in range(100, 100 + BOOKED_KEPT)}
    d.state = replace(d.state, booked=booked, next_generation=1_000)
    [buy] = places(d.tick("100"))
    d.order(buy, "closed", filled="1")
    assert (len(d.state.booked), d.state.forgotten_below) == (BOOKED_KEPT, 101)
    d.feed(ours("open", -4, 0x200, "closed", "1", ts=T + 1))  # a stray that ended
    assert (len(d.state.booked), d.state.forgotten_below) == (BOOKED_KEPT, 102)


# ------------------------------------------------------------------ the first start


def test_the_adoption_is_published_even_when_the_grid_is_still_starting() -> None:
    d = Driver(grid(mode="long", levels=1), adopt=False)
    d.state = replace(d.state, published_ts=T)  # published a moment ago
    out = d.feed(snapshot())
    assert d.state.status == "starting" and out == [d.core.state_event(d.state, full=False)]


def test_with_a_price_seen_before_the_snapshot_the_adoption_places_at_once() -> None:
    d = Driver(grid(mode="long", levels=1), adopt=False)
    assert places(d.tick("100")) == []
    [buy] = places(d.feed(snapshot()))
    assert (d.slot(-1).client_order_id, d.slot(-1).sent_seq) == (buy.client_order_id, d.seq)


def test_the_adoption_is_published_and_a_second_snapshot_or_another_instances_is_ignored() -> None:
    d = Driver(grid(mode="long", levels=1), adopt=False)
    assert d.feed(snapshot(instance="g2")) == [] and not d.state.adopted
    out = d.feed(snapshot(input_seq=0))
    assert d.state.adopted and d.state.seq == d.seq and out == [d.core.state_event(d.state)]  # the first ever: full
    before = d.state
    assert d.feed(snapshot([ours("open", -1, 9, "open", "0")])) == [] and d.state == before


def test_early_events_up_to_the_snapshots_input_are_in_it_and_later_ones_are_booked() -> None:
    d = Driver(grid(mode="long", levels=2), adopt=False)
    d.feed(ours("open", -1, 4, "closed", "1", ts=T - 5))  # seq 1: the venue's position includes it
    d.feed(ours("open", -2, 5, "closed", "2", ts=T + 5))  # seq 2: after the venue was asked
    position = Position(id="p", venue="sim", account="main", symbol="BTC/USDT:USDT", side="long", contracts=D(1), ts=T, ts_local=T)
    d.feed(snapshot(positions=[position], input_seq=1))
    assert (d.core.position(d.state), d.state.early, d.state.fills) == (D(3), [], 1)


# ------------------------------------------------------------------ liquidations, breakers, operators


def liquidation(d: Driver, account: str = "main", venue: str = "sim", **kw: Any) -> Liquidation:
    return Liquidation(
        id="l", venue=venue, account=account, symbol="BTC/USDT:USDT", side="long", contracts=D(1), price=D(50), fee=D(1),
        ts=d.ts + 1, ts_local=d.ts + 1, **kw,
    )  # fmt: skip


def test_a_liquidation_of_another_account_or_venue_changes_nothing() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    for ev in (liquidation(d, account="other"), liquidation(d, venue="other")):
        assert d.feed(ev) == [] and d.state == before


def test_a_liquidation_books_the_loss_per_contract_and_empties_everything() -> None:
    d = Driver(grid(mode="long", levels=1), market=replace(MARKET, contract_size=D("0.5")))
    [buy] = places(d.tick("100"))
    d.order(buy, "closed", filled="2", fee_cost=D("0.25"))
    d.state = replace(d.state, unassigned=D(3))
    d.feed(liquidation(d))
    st = d.state
    assert (st.realized_pnl, st.fees, st.unassigned, st.halted, st.ts, st.seq) == (D(-40), D("1.25"), 0, True, d.ts + 1, d.seq)
    assert [(s.holding, s.entry_price) for s in st.slots] == [(0, None)]
    assert st.fault == "liquidated by the venue: 1 long at 50 (fee 1)"


def test_a_liquidation_while_halted_with_nothing_to_cancel_is_still_published() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    control(d, "halt")
    d.order(buy, "canceled")
    out = d.feed(liquidation(d))
    assert out == [d.core.state_event(d.state, full=False)]


def test_a_breaker_that_changes_nothing_is_still_published_with_its_time() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    out = breaker(d, "ok", ts=d.ts + 7)
    assert (d.state.ts, d.state.seq) == (d.ts + 7, d.seq) and out == [d.core.state_event(d.state, full=False)]


def test_orders_placed_when_a_breaker_closes_are_sent_at_that_input() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    breaker(d, "reduce_only")
    d.order(buy, "canceled")
    [again] = places(breaker(d, "ok"))
    assert (d.slot(-1).client_order_id, d.slot(-1).sent_seq) == (again.client_order_id, d.seq)


def test_operator_commands_for_another_component_are_ignored() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    assert control(d, "halt", component="risk") == [] and control(d, "halt", instance="g2") == [] and d.state == before


def test_resume_and_reset_clear_exactly_what_pause_halt_and_faults_set() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    control(d, "pause")
    control(d, "halt")
    d.order(buy, "canceled")
    d.state = replace(d.state, fault="x")
    out = control(d, "reset")
    assert (d.state.paused, d.state.halted, d.state.fault, d.state.status) == (False, False, None, "running")
    assert (d.state.ts, d.state.seq) == (d.ts, d.seq) and published(out) == [d.core.state_event(d.state)]  # the status changed: full
    assert [(p.side, p.price, d.slot(-1).sent_seq) for p in places(out)] == [("buy", D(90), d.seq)]
    control(d, "pause")
    control(d, "resume")
    assert (d.state.paused, d.state.status) == (False, "running")


def test_an_operator_command_that_changes_nothing_is_still_published() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    d.ts += 7
    out = control(d, "resume")
    assert out == [d.core.state_event(d.state, full=False)] and (d.state.ts, d.state.seq) == (d.ts, d.seq)
