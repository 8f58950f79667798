"""The funding arbitrage's core, one behaviour at a time (pure: events in, commands out).

Driven by testkit/arbitrage.py's harness: a scripted venue answers each place the way the test
says, time passes with clock ticks, and every order is checked exactly (side, amount, a limit
within the band of the book, IOC, reduce-only, use_margin) together with the state it leaves.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from bus.contract import InputRejected
from schemas.account import BorrowInterest, FundingPayment
from schemas.commands import CancelOrder, PlaceOrder
from schemas.ops import Clock, RiskAlert
from strategies.arbitrage import legs as L
from strategies.arbitrage.config import ArbLeg
from strategies.arbitrage.core import PUBLISH_EVERY_MS as PUBLISH
from strategies.arbitrage.core import ArbCore
from strategies.arbitrage.state import ArbState
from testkit.arbitrage import PERP, SPOT, T0, ArbHarness, RecordingArbHarness, arb_config, replay

HOUR = 3_600_000
HOLD = 10_000  # the default entry_hold_ms
NAKED = 5_000  # the default naked_ms


# ---------------------------------------------------------------------- helpers


def places(out: list[Any]) -> list[PlaceOrder]:
    return [o for o in out if isinstance(o, PlaceOrder)]


def cancels(out: list[Any]) -> list[CancelOrder]:
    return [o for o in out if isinstance(o, CancelOrder)]


def alerts(out: list[Any]) -> list[RiskAlert]:
    return [o for o in out if isinstance(o, RiskAlert)]


def check_order(
    h: ArbHarness,
    order: PlaceOrder,
    leg: int,
    side: str,
    amount: D | str,
    *,
    reduce_only: bool = False,
    use_margin: bool = False,
    band: D | None = None,
) -> None:
    """`order` is an IOC limit on `leg` for exactly `amount` (venue units), priced through the touch
    by at most `band` (the entry band unless given), with these flags."""
    market_leg = h.cfg.legs[leg]
    assert (order.venue, order.symbol, order.account) == (market_leg.venue, market_leg.symbol, h.cfg.account)
    assert order.side == side
    assert order.amount == D(amount), (order.amount, amount)
    assert order.order_type == "limit" and order.time_in_force == "IOC" and not order.post_only
    assert order.reduce_only is reduce_only
    assert order.use_margin is use_margin
    book = h.state.legs[leg]
    assert order.price is not None and book.bid is not None and book.ask is not None
    assert book.market.on_tick(order.price)
    width = band if band is not None else h.cfg.band
    if side == "buy":  # crosses the ask, by at most the band
        assert book.ask <= order.price <= book.ask * (1 + width), (order.price, book.ask)
    else:
        assert book.bid * (1 - width) <= order.price <= book.bid, (order.price, book.bid)


def fresh(h: ArbHarness) -> None:
    """Both legs' books at the harness's current time."""
    h.book(0)
    h.book(1)


def start_entry(h: ArbHarness, long_leg: int = 0, apr: str = "0.3") -> PlaceOrder:
    """A spread above entry, held long enough: leg 1 goes out (returned, still unanswered)."""
    fresh(h)
    h.spread(apr, long_leg)
    h.tick(h.cfg.entry_hold_ms)
    assert len(h.pending) == 1, h.pending
    return h.pending[0]


def enter(h: ArbHarness, long_leg: int = 0) -> None:
    """A complete entry: leg 1 and its hedge both filled."""
    start_entry(h, long_leg)
    h.answer("1")
    assert len(h.pending) == 1
    h.answer("1")
    assert h.state.saga is None and h.state.holding_long == long_leg, h.state.saga


def perp_perp(**kw: Any) -> ArbHarness:
    """Two perpetuals of the same asset on two venues (sim and sim2)."""
    legs = [ArbLeg(venue="sim", symbol=PERP.symbol), ArbLeg(venue="sim2", symbol=PERP.symbol)]
    return ArbHarness(arb_config(legs=legs, **kw), [PERP, PERP])


def books_of(h: ArbHarness) -> dict[str, dict[str, D]]:
    """The last published state's books, as numbers."""
    books = h.states[-1].state["books"]
    return {k: {f: D(str(v)) for f, v in b.items()} for k, b in books.items()}


def sent_ids(h: ArbHarness) -> list[str]:
    return [p.client_order_id for p in h.sent]


# ---------------------------------------------------------------------- directions


def test_positive_funding_buys_spot_ioc_then_sells_the_perp_sized_from_the_spots_executed_base_quantity() -> None:
    h = ArbHarness()
    leg1 = start_entry(h, long_leg=0)
    check_order(h, leg1, 0, "buy", "0.01")
    # The spot fills well below the perp's price: equal notional would short only 0.009 BTC of perp.
    h.book(1, D(64000))
    out = h.answer("1", price=D("59000"))
    [hedge] = places(out)
    check_order(h, hedge, 1, "sell", "0.010")
    assert h.state.saga is not None and h.state.saga.step == "leg2"
    h.answer("1")
    st = h.state
    assert h.held == [D("0.01"), D("-0.010")] == h.venue_held
    assert st.saga is None and st.orders == []
    assert st.holding_long == 0 and st.entries == 1 and st.exits == 0
    assert st.status == "running"
    published = h.states[-1]
    assert published.state["entries"] == 1 and published.state["holding_long"] == 0
    assert published.position == D("-0.010")  # the perpetual's position


def test_a_perpetual_leg_is_sized_in_contracts_from_the_base_quantity() -> None:
    perp = replace(PERP, contract_size=D("0.001"), lot_size=D(1), min_amount=D(1))
    h = ArbHarness(arb_config(amount=D("0.0123")), [SPOT, perp])
    leg1 = start_entry(h)
    check_order(h, leg1, 0, "buy", "0.0123")
    [hedge] = places(h.answer("1"))
    check_order(h, hedge, 1, "sell", "12")  # 12 contracts of 0.001 BTC: 0.012 BTC, the 0.0003 rest below a lot
    assert h.state.saga is not None and h.state.saga.remainder == D("0.0003")
    h.answer("1")
    assert h.held[1] == D("-0.012") == h.venue_held[1]
    assert abs(h.held[0] + h.held[1]) < D("0.001")


def test_negative_funding_with_use_margin_sells_spot_on_margin_and_buys_the_perp() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    leg1 = start_entry(h, long_leg=1)
    check_order(h, leg1, 0, "sell", "0.01", use_margin=True)
    [hedge] = places(h.answer("1"))
    check_order(h, hedge, 1, "buy", "0.010")  # use_margin is for the spot leg only
    h.answer("1")
    assert h.held == [D("-0.01"), D("0.010")] == h.venue_held
    assert h.state.holding_long == 1 and h.state.entries == 1 and h.state.blocked is None


def test_negative_funding_without_margin_places_nothing_and_blocks_with_margin_unavailable_alerting_once() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.3", long_leg=1)
    out = h.tick(HOLD)
    assert h.sent == []
    assert h.state.blocked == "margin_unavailable" and h.state.blocked_long == 1
    assert h.state.status == "reduce_only"
    [alert] = alerts(out)
    assert alert.kind == "arbitrage_margin_unavailable" and alert.severity == "critical" and alert.instance == "t"
    for _ in range(5):  # still negative funding: still nothing, and no second alert
        h.spread("0.3", long_leg=1)
        h.tick(HOLD)
        fresh(h)
    assert h.sent == [] and len(h.alerts) == 1
    assert h.states[-1].state["blocked"] == "margin_unavailable"


def test_a_margin_unavailable_block_clears_when_the_funding_turns_positive() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.3", long_leg=1)
    h.tick(HOLD)
    assert h.state.blocked == "margin_unavailable"
    leg1 = start_entry(h, long_leg=0)  # positive funding needs no margin
    check_order(h, leg1, 0, "buy", "0.01")
    assert h.state.blocked is None


@pytest.mark.parametrize("long_leg", [0, 1])
def test_perp_perp_longs_the_lower_funding_leg_and_shorts_the_other(long_leg: int) -> None:
    h = perp_perp()
    leg1 = start_entry(h, long_leg=long_leg)
    side1, side2 = ("buy", "sell") if long_leg == 0 else ("sell", "buy")
    check_order(h, leg1, 0, side1, "0.010")
    assert leg1.venue == "sim"
    [hedge] = places(h.answer("1"))
    check_order(h, hedge, 1, side2, "0.010")
    assert hedge.venue == "sim2"
    h.answer("1")
    sign = 1 if long_leg == 0 else -1
    assert h.held == [sign * D("0.010"), -sign * D("0.010")] == h.venue_held
    assert h.state.holding_long == long_leg and h.state.entries == 1


# ---------------------------------------------------------------------- when to enter


def test_entry_waits_until_the_net_apr_stayed_at_or_above_entry_for_entry_hold_ms() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.tick(HOLD - 1)
    assert h.sent == []
    h.spread("0.10")  # exactly entry_apr still counts, and does not restart the wait
    assert h.sent == []
    out = h.tick(1)
    [leg1] = places(out)
    check_order(h, leg1, 0, "buy", "0.01")
    assert leg1.ts == T0 + HOLD and leg1.ttl_ms == h.cfg.naked_ms


def test_a_dip_below_entry_restarts_the_wait() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.tick(6_000)
    h.spread("0.0999")  # below entry (and above exit): the wait starts over
    h.tick(1_000)
    h.spread("0.3")  # at T0 + 7 s
    h.tick(HOLD - 1)
    fresh(h)
    assert h.sent == []
    h.tick(1)
    assert len(h.sent) == 1 and h.sent[0].ts == T0 + 7_000 + HOLD


def test_a_change_of_direction_restarts_the_wait() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    h.spread("0.3", long_leg=0)
    h.tick(6_000)
    h.spread("0.3", long_leg=1)
    h.tick(HOLD - 1)
    fresh(h)
    assert h.sent == []
    h.tick(1)
    [leg1] = h.sent
    check_order(h, leg1, 0, "sell", "0.01", use_margin=True)


@pytest.mark.parametrize("state", ["stale", "missing"])
def test_a_stale_or_missing_snapshot_blocks_entry(state: str) -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.tick(5_000)
    h.spread(state=state)
    h.tick(HOLD)
    fresh(h)
    h.tick(HOLD)
    assert h.sent == []
    fresh(h)
    h.spread("0.3")  # ok again: the wait starts from here
    h.tick(HOLD - 1)
    assert h.sent == []
    h.tick(1)
    assert len(h.sent) == 1


def test_no_entry_on_a_snapshot_older_than_spread_fresh_ms() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.now += h.cfg.spread_fresh_ms + 1  # the monitor went quiet; the books did not
    fresh(h)
    h.tick(0)
    assert h.sent == []
    h.spread("0.3")  # fresh again: the wait starts over (test_a_gap_in_the_snapshots_restarts_the_wait)
    h.tick(HOLD)
    assert len(h.sent) == 1


def test_a_stale_book_on_either_leg_blocks_entry() -> None:
    h = ArbHarness()  # its books are from T0
    for _ in range(4):  # the spread stays fresh, below entry, while the books go quiet
        h.now += 5_000
        h.spread("0.05")
    for _ in range(3):  # then above entry for longer than the wait
        h.now += 5_000
        h.spread("0.3")
    h.book(0)  # leg 1's book is still from T0
    assert h.sent == []
    h.book(1)
    assert len(h.sent) == 1


def test_a_gap_in_the_snapshots_restarts_the_wait() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.now += h.cfg.spread_fresh_ms + 1  # the monitor went quiet: nothing says the APR held meanwhile
    fresh(h)
    h.spread("0.3")
    assert h.sent == []
    h.tick(HOLD - 1)
    assert h.sent == []
    h.tick(1)
    assert len(h.sent) == 1


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("state", ["reduce_only", "halted"])
def test_a_breaker_not_ok_on_either_leg_blocks_entry_until_it_closes(which: int, state: str) -> None:
    h = ArbHarness()
    scope = h.scopes(1)[which]  # global, venue, account, symbol
    h.breaker(scope, state)  # type: ignore[arg-type]
    h.spread("0.3")
    h.tick(HOLD)
    h.tick(1_000)
    assert h.sent == []
    assert h.state.status == "reduce_only"
    h.breaker(scope, "ok", previous=state)  # type: ignore[arg-type]
    assert len(h.sent) == 1


def test_a_breaker_on_another_market_or_account_changes_nothing() -> None:
    h = ArbHarness()
    h.breaker("symbol.sim.ETHUSDT", "halted")
    h.breaker("account.sim.other", "halted")
    h.breaker("venue.sim2", "halted")
    h.spread("0.3")
    h.tick(HOLD)
    assert len(h.sent) == 1


def test_nothing_happens_before_both_books_are_known() -> None:
    cfg = arb_config()
    core = ArbCore(cfg, [SPOT, PERP])
    h = ArbHarness()
    h.core, h.state = core, core.initial_state()  # no book yet
    h.spread("0.3")
    h.tick(HOLD)
    h.book(0)
    h.tick(1)
    assert h.sent == [] and h.state.status == "starting"
    h.book(1)
    assert len(h.sent) == 1


# ---------------------------------------------------------------------- partial fills


def test_a_partial_leg_1_is_hedged_from_what_filled_rounded_down_to_leg_2s_lot_with_the_remainder_recorded() -> None:
    h = ArbHarness()
    start_entry(h)
    [hedge] = places(h.answer("0.75"))  # 0.0075 BTC of spot
    assert h.held[0] == D("0.0075")
    check_order(h, hedge, 1, "sell", "0.007")
    saga = h.state.saga
    assert saga is not None and saga.step == "leg2" and saga.remainder == D("0.0005")
    assert h.states[-1].state["saga"]["remainder"] == "0.0005"
    h.answer("1")
    h.run_until(lambda: h.state.saga is None)
    assert h.held[1] == D("-0.007") == h.venue_held[1]
    assert abs(h.held[0] + h.held[1]) < PERP.lot_size  # what remains unhedged is below one lot of leg 2
    assert h.held == h.venue_held
    assert h.state.entries == 1 and h.state.holding_long == 0
    assert h.state.unwinds == []  # a remainder is not a failed entry


def test_leg_1_filled_less_than_one_lot_of_leg_2_is_unwound() -> None:
    h = ArbHarness(arb_config(amount=D("0.05")))
    start_entry(h)
    out = h.answer("0.015")  # 0.00075 BTC: less than the perpetual's 0.001 lot
    assert h.held[0] == D("0.00075")
    [unwind] = places(out)
    check_order(h, unwind, 0, "sell", "0.00075", band=h.cfg.exit_band)
    saga = h.state.saga
    assert saga is not None and saga.step == "unwind"
    assert len(h.state.unwinds) == 1
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held
    assert h.state.saga is None and h.state.holding_long == -1 and h.state.entries == 0


def test_a_leg_1_that_filled_nothing_ends_the_saga_with_nothing_to_hedge() -> None:
    h = ArbHarness()
    start_entry(h)
    out = h.answer("0")
    assert places(out) == [] and h.state.saga is None
    assert h.state.entries == 0 and h.state.unwinds == [] and h.state.blocked is None


# ---------------------------------------------------------------------- leg 2 fails


def test_a_rejected_hedge_unwinds_leg_1s_filled_quantity() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("0.6")  # 0.006 BTC
    out = h.answer(status="rejected", reason="insufficient_balance")
    [unwind] = places(out)
    check_order(h, unwind, 0, "sell", "0.006", band=h.cfg.exit_band)  # spot: not reduce-only, no loan
    saga = h.state.saga
    assert saga is not None and saga.step == "unwind" and "refused" in saga.reason
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held
    assert h.state.saga is None and h.state.entries == 0 and len(h.state.unwinds) == 1
    assert h.state.blocked is None  # one unwind is within the budget


def test_a_rejected_hedge_unwinds_a_perpetual_leg_1_reduce_only() -> None:
    h = perp_perp()
    start_entry(h, long_leg=1)
    h.answer("1")  # leg 1: sold 0.010 on sim
    [unwind] = places(h.answer(status="rejected", reason="upstream_rejected"))
    check_order(h, unwind, 0, "buy", "0.010", reduce_only=True, band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held and h.state.saga is None


def test_a_hedge_not_answered_by_the_naked_deadline_is_canceled_then_unwound_once_the_venue_ends_it() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    [hedge] = h.pending
    h.tick(NAKED - 1)
    assert h.cancels == [] and len(h.sent) == 2
    out = h.tick(1)
    [cancel] = cancels(out)
    assert cancel.client_order_id == hedge.client_order_id and cancel.symbol == PERP.symbol
    h.tick(500)
    h.tick(500)
    assert len(h.cancels) == 1 and len(h.sent) == 2  # no new order while the hedge may still fill
    out = h.answer("0")  # the venue ends it: nothing filled
    [unwind] = places(out)
    check_order(h, unwind, 0, "sell", "0.01", band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held and h.state.saga is None


def test_a_hedge_partially_filled_by_the_deadline_unwinds_only_the_unhedged_part() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    out = h.answer("0.5")  # 0.005 hedged; the rest is sent again at once
    [again] = places(out)
    check_order(h, again, 1, "sell", "0.005")
    h.tick(NAKED)  # unanswered at the deadline
    assert [c.client_order_id for c in h.cancels] == [again.client_order_id]
    [unwind] = places(h.answer("0"))
    check_order(h, unwind, 0, "sell", "0.005", band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D("0.005"), D("-0.005")] == h.venue_held
    assert h.state.saga is None and h.state.holding_long == 0  # the hedged half is kept
    assert len(h.state.unwinds) == 1


def test_a_hedge_that_filled_nothing_is_sent_again_until_the_deadline_then_unwound() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    for _ in range(100):
        if h.pending:
            h.answer("0")
        else:
            h.tick(250)
        if h.state.saga is not None and h.state.saga.step == "unwind":
            break
    hedges = [p for p in h.sent if p.symbol == PERP.symbol]
    assert len(hedges) > 1
    assert all(p.ts < T0 + HOLD + NAKED for p in hedges)
    assert all(p.amount == D("0.010") and p.side == "sell" for p in hedges)
    [unwind] = h.pending
    check_order(h, unwind, 0, "sell", "0.01", band=h.cfg.exit_band)
    assert unwind.ts <= T0 + HOLD + NAKED + 250


def test_a_hedge_canceled_at_the_deadline_that_filled_in_the_meantime_is_kept_and_only_the_rest_unwound() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.tick(NAKED)
    assert len(h.cancels) == 1
    [unwind] = places(h.answer("0.6"))  # the venue ends it: 0.006 had filled before the cancel
    check_order(h, unwind, 0, "sell", "0.004", band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D("0.006"), D("-0.006")] == h.venue_held
    assert h.state.saga is None and h.state.holding_long == 0


def test_an_operator_exit_during_an_entry_lets_the_hedge_complete_then_closes_both_legs() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.control("exit")
    [hedge] = h.pending  # still hedged first: leg 1 is never left naked to obey an exit
    check_order(h, hedge, 1, "sell", "0.010")
    h.answer("1")
    assert h.state.saga is not None and h.state.saga.kind == "exit"
    check_exit(h)


# ---------------------------------------------------------------------- margin errors and the failure budget


@pytest.mark.parametrize("reason", ["margin_unavailable", "insufficient_collateral"])
def test_a_margin_refusal_blocks_entries_that_way_until_an_operator_reset(reason: str) -> None:
    h = ArbHarness(arb_config(use_margin=True))
    start_entry(h, long_leg=1)
    out = h.answer(status="rejected", reason=reason)
    assert places(out) == [] and h.state.saga is None
    assert h.state.blocked == reason and h.state.blocked_long == 1
    [alert] = alerts(out)
    assert alert.kind == f"arbitrage_{reason}"
    for _ in range(4):
        fresh(h)
        h.spread("0.3", long_leg=1)
        h.tick(HOLD)
    assert len(h.sent) == 1 and len(h.alerts) == 1
    h.control("reset")
    assert h.state.blocked is None
    fresh(h)
    h.spread("0.3", long_leg=1)
    h.tick(HOLD)
    assert len(h.sent) == 2
    check_order(h, h.sent[1], 0, "sell", "0.01", use_margin=True)


@pytest.mark.parametrize("reason", ["margin_unavailable", "insufficient_collateral"])
def test_a_margin_refusal_is_lifted_when_the_direction_changes(reason: str) -> None:
    h = ArbHarness(arb_config(use_margin=True))
    start_entry(h, long_leg=1)
    h.answer(status="rejected", reason=reason)
    assert h.state.blocked == reason
    leg1 = start_entry(h, long_leg=0)
    check_order(h, leg1, 0, "buy", "0.01")


def test_a_hedge_refused_for_margin_unwinds_leg_1_and_blocks_reentry() -> None:
    h = ArbHarness(
        arb_config(use_margin=True, legs=[ArbLeg(venue="sim", symbol=PERP.symbol), ArbLeg(venue="sim", symbol=SPOT.symbol)]), [PERP, SPOT]
    )
    leg1 = start_entry(h, long_leg=0)  # negative funding: long the perp (sent first), short spot on margin
    check_order(h, leg1, 0, "buy", "0.010")
    [hedge] = places(h.answer("1"))
    check_order(h, hedge, 1, "sell", "0.010", use_margin=True)
    [unwind] = places(h.answer(status="rejected", reason="insufficient_collateral"))
    check_order(h, unwind, 0, "sell", "0.010", reduce_only=True, band=h.cfg.exit_band)
    assert h.state.blocked == "insufficient_collateral"
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held
    fresh(h)
    h.spread("0.3", long_leg=0)
    h.tick(HOLD)
    assert len(h.sent) == 3  # no new entry


def fail_once(h: ArbHarness, long_leg: int = 0, reason: str = "upstream_rejected") -> None:
    """An entry whose hedge is refused, unwound completely."""
    start_entry(h, long_leg)
    h.answer("1")
    h.answer(status="rejected", reason=reason)
    h.run_until(lambda: h.state.saga is None)
    assert h.held == [D(0), D(0)]


def test_after_unwinds_per_hour_unwinds_entries_are_blocked_until_an_operator_reset() -> None:
    h = ArbHarness()
    fail_once(h)
    assert h.state.blocked is None
    h.tick(60_000)
    fail_once(h)
    assert h.state.blocked == "failure_budget" and h.state.status == "reduce_only"
    budget_alerts = [a for a in h.alerts if a.kind == "arbitrage_failure_budget"]
    assert len(budget_alerts) == 1
    sent = len(h.sent)
    for _ in range(8):  # hours pass: still blocked (only an operator clears it)
        h.tick(HOUR // 4)
        fresh(h)
        h.spread("0.3")
        h.tick(HOLD)
    assert len(h.sent) == sent
    h.control("reset")
    assert h.state.blocked is None and h.state.unwinds == []
    start_entry(h)


def test_unwinds_more_than_an_hour_apart_leave_the_budget_intact() -> None:
    h = ArbHarness()
    fail_once(h)
    h.tick(HOUR)
    fail_once(h)
    assert h.state.blocked is None
    start_entry(h)


def test_the_failure_budget_still_counts_while_a_margin_block_stands() -> None:
    """Two unwinds within the hour, the second while a margin block on the other direction
    stands: the budget is exhausted all the same, and a change of direction (which lifts the
    margin block) must not allow a third entry."""
    h = perp_perp()
    fail_once(h, long_leg=0, reason="insufficient_collateral")  # unwind 1; blocked (margin) long=0
    assert h.state.blocked == "insufficient_collateral"
    fail_once(h, long_leg=1, reason="insufficient_collateral")  # the direction changed: unwind 2
    assert len(h.state.unwinds) == 2
    sent = len(h.sent)
    fresh(h)
    h.spread("0.3", long_leg=0)  # the margin block is about the other direction: lifted
    h.tick(HOLD)
    assert len(h.sent) == sent, "a third entry within the hour: the failure budget was bypassed"
    assert h.state.blocked is not None


# ---------------------------------------------------------------------- exits


def check_exit(h: ArbHarness, short_spot: bool = False) -> None:
    """The exit in flight closes the spot leg first, then the perpetual reduce-only, sized from
    what is held; it ends flat."""
    held = list(h.held)
    [close1] = h.pending
    spot_side = "buy" if held[0] < 0 else "sell"
    check_order(h, close1, 0, spot_side, str(abs(held[0])), use_margin=short_spot, band=h.cfg.exit_band)
    [close2] = places(h.answer("1"))
    perp_side = "buy" if held[1] < 0 else "sell"
    check_order(h, close2, 1, perp_side, str(abs(held[1])), reduce_only=True, band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held
    assert h.state.saga is None and h.state.holding_long == -1 and h.state.exits == 1


def test_exit_when_the_net_apr_falls_below_exit_apr() -> None:
    h = ArbHarness()
    enter(h)
    h.spread("0.02")  # at exit_apr: held
    assert h.pending == []
    h.spread("0.0199")
    assert h.state.saga is not None and h.state.saga.kind == "exit"
    check_exit(h)


def test_exit_when_the_funding_flips() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    enter(h, long_leg=0)
    h.spread("0.3", long_leg=1)  # the other way round now, however attractive
    assert h.state.saga is not None and "flip" in h.state.saga.reason
    check_exit(h)


def test_a_short_spot_position_is_bought_back_on_margin_first() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    enter(h, long_leg=1)
    h.spread("0.01", long_leg=1)
    check_exit(h, short_spot=True)


@pytest.mark.parametrize("state", ["stale", "missing", None])
def test_exit_when_the_spread_is_not_fresh_for_stale_exit_ms(state: str | None) -> None:
    h = ArbHarness()
    enter(h)  # the last ok snapshot: T0
    if state is not None:
        h.spread(state=state)
    h.tick(h.cfg.stale_exit_ms - HOLD)  # T0 + stale_exit_ms
    assert h.pending == []
    h.tick(1)
    assert h.state.saga is not None and h.state.saga.kind == "exit"
    check_exit(h)


@pytest.mark.parametrize("state", ["reduce_only", "halted"])
def test_exit_when_a_breaker_opens(state: str) -> None:
    h = ArbHarness()
    enter(h)
    h.breaker(h.scopes(1)[-1], state)  # type: ignore[arg-type]
    assert h.state.saga is not None and "breaker" in h.state.saga.reason
    check_exit(h)


def test_an_operator_exit_closes_both_legs_and_stays_paused_until_resumed() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    check_exit(h)
    assert h.state.paused and h.state.status == "paused"
    fresh(h)
    h.spread("0.3")
    h.tick(HOLD)
    assert len(h.sent) == 4
    h.control("resume")
    start_entry(h)


def test_an_operator_halt_closes_both_legs() -> None:
    h = ArbHarness()
    enter(h)
    h.control("halt")
    check_exit(h)
    assert h.state.status == "halted"
    fresh(h)
    h.spread("0.3")
    h.tick(HOLD)
    assert len(h.sent) == 4


def test_an_exit_is_sized_from_what_is_held_and_completes_a_partial_close() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("0.7")
    h.answer("1")
    h.run_until(lambda: h.state.saga is None)
    assert h.held == [D("0.007"), D("-0.007")]
    h.control("exit")
    [close1] = h.pending
    check_order(h, close1, 0, "sell", "0.007", band=h.cfg.exit_band)
    [rest] = places(h.answer("0.5"))  # half of it: the rest of the spot goes out before the perp
    check_order(h, rest, 0, "sell", "0.0035", band=h.cfg.exit_band)
    [close2] = places(h.answer("1"))
    check_order(h, close2, 1, "buy", "0.007", reduce_only=True, band=h.cfg.exit_band)
    h.answer("1")
    assert h.held == [D(0), D(0)] == h.venue_held


def test_a_refused_exit_order_is_sent_again_after_retry_ms() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    first = h.pending[0]
    h.answer(status="rejected", reason="venue_error")
    h.tick(h.cfg.retry_ms - 1)
    assert h.pending == []
    h.tick(1)
    [again] = h.pending
    check_order(h, again, 0, "sell", "0.01", band=h.cfg.exit_band)
    assert again.client_order_id != first.client_order_id


# ---------------------------------------------------------------------- accounting


def test_funding_fees_borrow_interest_and_basis_are_booked_apart_for_the_position_and_in_total() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    start_entry(h, long_leg=1)
    h.answer("1", price=D(60000))  # spot sold 0.01 at 60000: fee 0.6
    h.answer("1", price=D(59990))  # perp bought 0.01 at 59990: fee 0.29995
    h.funding(1, "1.5")
    h.interest("0.000001")  # on the spot loan, valued at the spot mark 60000: 0.06
    h.funding(0, "7")  # the spot leg's account has no funding, but it is booked if reported
    h.book(0, D(61000))
    h.book(1, D(61005))
    h.tick(PUBLISH)  # a ticker alone publishes nothing; the state is published at least this often
    b = books_of(h)
    # basis: the spot short lost 10, the perp long made 10.15, and the 0.000001 BTC of interest
    # owed since 60000 lost 0.001 (the interest is owed in the coin: the spot leg holds that much less)
    position = {"funding": D("8.5"), "basis": D("0.149"), "fees": D("0.89995"), "borrow": D("0.06")}
    assert b["position"] == position
    assert b["total"] == position
    h.spread("0.01", long_leg=1)  # exit: spot 0.01001 bought back at 61000 (fee 0.61061), perp sold at 61005 (fee 0.305025)
    h.answer("1", price=D(61000))
    h.answer("1", price=D(61005))
    # The loan and its interest (owed in the coin) repaid: bought back rounded up to the lot, a long below one lot is left.
    assert h.held == [D("0.000009"), D(0)]
    b = books_of(h)
    assert b["total"] == {"funding": D("8.5"), "basis": D("0.149"), "fees": D("1.815585"), "borrow": D("0.06")}
    assert b["position"] == b["total"]  # the one position, closed: its books stay until the next entry
    assert h.states[-1].realized_pnl == D("8.5") + D("0.149") - D("1.815585") - D("0.06")


def test_a_second_positions_books_start_from_zero_and_the_total_keeps_the_first() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1", price=D(60000))
    h.answer("1", price=D(60000))
    h.funding(1, "2")
    h.spread("0.01")
    h.answer("1", price=D(60100))  # spot sold 100 higher: +1 of basis
    h.answer("1", price=D(60000))
    first_fees = D("0.6") + D("0.3") + D("0.601") + D("0.3")
    assert books_of(h)["total"] == {"funding": D(2), "basis": D(1), "fees": first_fees, "borrow": D(0)}
    start_entry(h)
    h.answer("1", price=D(60000))
    h.answer("1", price=D(60000))
    h.funding(1, "3")
    b = books_of(h)
    assert b["position"] == {"funding": D(3), "basis": D(0), "fees": D("0.9"), "borrow": D(0)}
    assert b["total"] == {"funding": D(5), "basis": D(1), "fees": first_fees + D("0.9"), "borrow": D(0)}


def test_funding_and_interest_of_another_account_or_market_are_not_booked() -> None:
    h = ArbHarness()
    enter(h)
    before = books_of(h)
    c = h.cfg.legs[1]
    common: dict[str, Any] = dict(
        asset="USDT", amount=D(5), funding_rate=D("0.0001"), contracts=D(1), funding_time=h.now, ts=h.now, ts_local=h.now
    )
    h.feed(FundingPayment(id="x1", venue=c.venue, account="other", symbol=c.symbol, **common))
    h.feed(FundingPayment(id="x2", venue=c.venue, account="main", symbol="ETH/USDT:USDT", **common))
    h.feed(FundingPayment(id="x3", venue="sim2", account="main", symbol=c.symbol, **common))
    h.feed(
        BorrowInterest(
            id="x4",
            venue="sim",
            account="other",
            asset="BTC",
            amount_borrowed=D(1),
            interest=D(1),
            interest_rate=D(0),
            ts=h.now,
            ts_local=h.now,
        )
    )
    h.feed(
        BorrowInterest(
            id="x5",
            venue="sim",
            account="main",
            asset="ETH",
            amount_borrowed=D(1),
            interest=D(1),
            interest_rate=D(0),
            ts=h.now,
            ts_local=h.now,
        )
    )
    h.tick(PUBLISH)
    assert books_of(h) == before


# ---------------------------------------------------------------------- order events


def test_the_same_order_update_twice_is_booked_once_and_sends_nothing_more() -> None:
    h = RecordingArbHarness()
    start_entry(h)
    h.answer("1")
    leg1_end = h.inputs[-1]
    [hedge] = h.pending
    state = h.state
    out = h.feed(leg1_end.event)
    assert places(out) == [] and cancels(out) == []
    assert h.state.fills == state.fills and h.state.position == state.position and h.state.legs == state.legs
    h.answer("1")
    hedge_end = h.inputs[-1]
    state = h.state
    out = h.feed(hedge_end.event)
    assert places(out) == [] and h.state.legs == state.legs and h.state.fills == state.fills and h.state.total == state.total
    assert h.held == h.venue_held == [D("0.01"), D("-0.010")]
    assert hedge.client_order_id in h.state.ended


def test_a_repeated_partial_update_of_a_live_order_is_booked_once() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    h.end(leg1, "0.004", "open")
    h.end(leg1, "0.004", "open")
    assert h.held[0] == D("0.004") and h.state.fills == 1
    assert leg1.price is not None
    assert h.state.position.fees == D("0.004") * leg1.price * D("0.001")
    h.end(leg1, "0.01", "closed")
    assert h.held[0] == D("0.01") == h.venue_held[0]


def test_a_late_update_with_more_fill_for_an_ended_order_books_only_the_difference() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    h.end(leg1, "0.005", "canceled")
    [hedge] = h.pending
    check_order(h, hedge, 1, "sell", "0.005")
    h.end(leg1, "0.007", "canceled")  # the venue's later word: 0.002 more executed
    assert h.held[0] == D("0.007") == h.venue_held[0]
    h.end(leg1, "0.007", "canceled")  # and its copy
    assert h.held[0] == D("0.007")
    h.answer("1")
    [more] = h.pending  # the hedge grows to what leg 1 executed
    check_order(h, more, 1, "sell", "0.002")
    h.answer("1")
    assert h.held == h.venue_held == [D("0.007"), D("-0.007")]
    assert h.state.saga is None and h.state.entries == 1


def test_an_older_update_arriving_after_a_newer_one_changes_nothing() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    price = D(60000)
    h.end(leg1, "0.004", "open", price=price)
    h.end(leg1, "0.008", "open", price=price)
    h.feed(h.update(leg1, D("0.004"), "open", average=price))  # a late copy of the first
    h.end(leg1, "0.01", "closed", price=price)
    assert h.held[0] == D("0.01") == h.venue_held[0]
    assert h.state.legs[0].cash == D("0.01") * price  # 600 paid, not more


def test_an_order_event_for_another_market_under_one_of_its_ids_is_refused() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    state = h.state
    wrong = h.update(replace(leg1, symbol=PERP.symbol), D("0.01"), "closed", average=D(60000))
    with pytest.raises(InputRejected):
        h.feed(wrong)
    with pytest.raises(InputRejected):
        h.feed(h.update(replace(leg1, venue="sim2"), D("0.01"), "closed", average=D(60000)))
    with pytest.raises(InputRejected):
        h.feed(h.update(replace(leg1, side="sell"), D("0.01"), "closed", average=D(60000)))
    assert h.state is state


def test_an_order_event_that_is_not_ours_is_ignored() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    state = h.state
    for cid in ("someoneelse1", "g" + leg1.client_order_id, h.core.prefix + "E1", h.core.prefix + "t86e80A"):
        out = h.feed(h.update(replace(leg1, client_order_id=cid), D("0.01"), "closed", average=D(60000)))
        assert places(out) == [] and h.state.legs == state.legs
    out = h.feed(msgspec.structs.replace(h.update(leg1, D("0.01"), "closed", average=D(60000)), account="other"))
    assert h.state.legs == state.legs


def test_an_open_order_of_ours_that_nothing_tracks_is_booked_and_canceled() -> None:
    h = ArbHarness()
    enter(h)
    stray = replace(h.sent[0], client_order_id=L.client_order_id(h.core.prefix, T0, 0, "buy", 999))
    out = h.end(stray, "0.002", "open")
    assert h.held[0] == D("0.012") == h.venue_held[0]
    [cancel] = cancels(out)
    assert cancel.client_order_id == stray.client_order_id


def scripted(h: ArbHarness) -> None:
    """Entries, a failed hedge, an exit: a fixed session."""
    enter(h)
    h.spread("0.01")
    h.answer("1")
    h.answer("1")
    fail_once(h)
    h.tick(HOUR)
    enter(h)
    h.control("exit")
    h.answer("0.5")
    h.run_until(lambda: h.state.saga is None)


def test_client_ids_are_deterministic_never_reused_and_fit_every_venue() -> None:
    a, b = ArbHarness(), ArbHarness()
    scripted(a)
    scripted(b)
    ids = sent_ids(a)
    assert len(ids) >= 10
    assert ids == sent_ids(b)
    assert [p.id for p in a.sent] == [p.id for p in b.sent]
    assert len(set(ids)) == len(ids)
    for cid in ids:
        assert cid.isalnum() and len(cid) <= 32, cid
        assert L.parse_client_order_id(a.core.prefix, cid) is not None
    assert L.longest_id(a.core.prefix) <= 32
    assert {c.client_order_id for c in a.cancels} <= set(ids)


def test_client_ids_differ_between_instances_and_funding_times() -> None:
    a = ArbHarness()
    b = ArbHarness(arb_config(instance="u"))
    start_entry(a)
    start_entry(b)
    assert sent_ids(a) != sent_ids(b)
    c = ArbHarness()
    fresh(c)
    c.spread("0.3", next_funding_time=T0 + 4 * 28_800_000)
    c.tick(HOLD)
    assert sent_ids(c) != sent_ids(a)


def test_a_core_restarted_from_any_checkpoint_sends_what_one_that_never_stopped_sent() -> None:
    h = RecordingArbHarness()
    enter(h)
    h.spread("0.01")
    h.answer("0.5")
    h.answer(status="rejected", reason="venue_error")
    h.run_until(lambda: h.state.saga is None)
    final, outs = replay(h.cfg, [SPOT, PERP], h.inputs)
    assert final == h.state and sum(outs, []) == h.outputs
    for cut in range(len(h.inputs)):
        state, _ = replay(h.cfg, [SPOT, PERP], h.inputs[:cut])
        state = msgspec.json.decode(msgspec.json.encode(state), type=ArbState)  # the checkpoint
        core = ArbCore(h.cfg, [SPOT, PERP])
        after: list[Any] = []
        for inbound in h.inputs[cut:]:
            state, out = core.step(state, inbound)
            after += out
        assert after == sum(outs[cut:], []), cut
        assert state == h.state


def test_a_clock_tick_for_another_instance_changes_nothing() -> None:
    h = ArbHarness()
    h.spread("0.3")
    state = h.state
    out = h.feed(Clock(id="c", component="arbitrage", instance="other", ts=T0 + HOLD))
    out += h.feed(Clock(id="c", component="grid", instance="t", ts=T0 + HOLD))
    assert out == [] and h.state is state


def test_time_comes_from_the_clock_ticks() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.tick(1_000)
    assert h.state.ts == T0 + 1_000
    assert h.state.seq == h.seq


def test_a_late_copy_of_an_order_ended_long_ago_is_not_booked_again() -> None:
    """Beyond the ended orders it remembers, a late copy (after JetStream's dedupe window) is
    recognised by its number, not booked as news (which would rebalance a position that is not there)."""
    h = ArbHarness(arb_config(entry_hold_ms=0))
    enter(h)
    first = h.sent[0]
    for _ in range(30):  # 30 exits and entries: 120 more orders than the first two
        h.spread("0.01")
        h.run_until(lambda: h.state.saga is None and h.state.holding_long < 0)
        fresh(h)
        h.spread("0.3")
        h.run_until(lambda: h.state.saga is None and h.state.holding_long == 0)
    assert first.client_order_id not in h.state.ended and h.state.forgotten_below > 0
    before = h.state
    h.feed(h.update(first, first.amount, "closed", average=first.price))
    assert h.held == h.venue_held and h.pending == []
    assert h.state.stale_events == before.stale_events + 1


def test_a_remainder_below_the_hedges_lot_is_kept_and_closed_with_the_position() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("0.7345")  # 0.007345 BTC of spot: the perpetual's lot (0.001) hedges 0.007
    [hedge] = h.pending
    assert hedge.amount == D("0.007")
    h.answer("1")
    h.tick(NAKED * 2)
    assert h.pending == [] and h.held == [D("0.00734"), D("-0.007")]  # spot lot 0.00001: 0.00034 kept
    h.control("exit")
    [close] = h.pending
    assert (close.side, close.amount) == ("sell", D("0.00734"))  # the remainder leaves with the position


# ---------------------------------------------------------------------- start-up checks


def test_a_config_the_markets_cannot_trade_is_refused_naming_the_field() -> None:
    from strategies.arbitrage.runner import check_config

    assert check_config(arb_config(), [SPOT, PERP], [32, 32]) == []
    assert check_config(arb_config(amount=D("0.0105")), [SPOT, PERP], [32, 32]) == [
        "amount: 0.0105 is not a whole number of legs[1]'s lots (0.001 x 1)"
    ]
    [small] = check_config(arb_config(amount=D("0.00001")), [SPOT, PERP], [32, 32])
    assert small.startswith("amount: 0.00001 is not a whole number of legs[1]'s lots")
    spot2 = replace(SPOT, symbol="ETH/USDT", base="ETH")
    assert check_config(arb_config(), [spot2, PERP], [32, 32]) == ["legs: both legs must be the same asset (ETH/USDT and BTC/USDT:USDT)"]
    assert check_config(arb_config(), [SPOT, replace(PERP, kind="spot")], [32, 32])[0].startswith("legs: one leg at least")
    odd = replace(PERP, kind="spot")  # a venue that says the ':' symbol is spot and the other a contract
    assert check_config(arb_config(), [replace(SPOT, kind="swap"), odd], [32, 32])[0] == (
        "legs: BTC/USDT:USDT reads as the perpetual, but the venue says BTC/USDT is"
    )
    [long_ids] = check_config(arb_config(instance="a-rather-long-instance-id"), [SPOT, PERP], [32, 20])
    assert long_ids.startswith("instance: its client order ids grow to") and "legs[1]'s venue holds 20" in long_ids
