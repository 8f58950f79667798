"""The risk core: which conditions trip which scopes, with what evidence, and what closes them."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from monitors.risk.config import FlashCrash, Latency, PositionLimit, RiskConfig
from monitors.risk.state import RiskState
from testkit.risk import T0, RiskDriver, alerts, cancel_alls, changes

BTC = "symbol.sim.BTC-USDT-USDT"
ETH = "symbol.sim.ETH-USDT-USDT"


def live(**kw: object) -> RiskDriver:
    d = RiskDriver(**kw)  # type: ignore[arg-type]
    d.at(T0)
    d.tick("100")
    d.tick("100", symbol="ETH/USDT:USDT")
    return d


def test_a_market_silent_longer_than_its_ttl_halts_its_scope_with_evidence_and_cancels_its_orders() -> None:
    d = live()
    assert changes(d.wait(4_000)) == []  # within the TTL
    d.tick("100", symbol="ETH/USDT:USDT", after=0)  # ETH keeps talking
    out = d.wait(1_500)
    [change] = changes(out)
    assert (change.scope, change.state, change.previous) == (BTC, "halted", "ok")
    [trip] = change.trips
    assert trip.breaker == "feed_stale" and trip.limit == 5_000 and trip.value is not None and trip.value > 5_000
    assert trip.events == [2]  # the last BTC ticker's input sequence
    [cancel] = cancel_alls(out)
    assert (cancel.venue, cancel.account, cancel.symbol, cancel.origin) == ("sim", "main", "BTC/USDT:USDT", "risk:main")
    assert d.state_of(ETH) == "ok"


def test_a_market_that_never_spoke_is_stale_from_the_monitor_start() -> None:
    d = RiskDriver()
    d.at(T0)
    d.tick("100")
    out = d.at(T0 + 5_001)
    assert [c.scope for c in changes(out)] == [ETH]


def test_a_stale_breaker_stays_open_when_data_resumes_until_an_operator_closes_it_and_never_while_stale() -> None:
    d = live()
    d.wait(6_000)
    assert d.state_of(BTC) == "halted"
    refused = d.control("reset", BTC)
    assert changes(refused) == [] and "still holds" in alerts(refused)[0].message
    d.tick("100")
    d.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert d.state_of(BTC) == "halted"  # data is back, but nobody closed it
    out = d.control("reset", BTC)
    [change] = changes(out)
    assert (change.scope, change.state, change.previous, change.trips) == (BTC, "ok", "halted", [])


def test_a_ten_percent_drop_within_the_window_reduces_the_market_and_a_slow_one_does_not() -> None:
    d = live(flash_crash=FlashCrash(move=Decimal("0.08"), window_ms=5_000))
    for price in ("98", "96", "94", "92"):
        assert changes(d.tick(price, after=1_000)) == []
        d.tick("100", symbol="ETH/USDT:USDT", after=0)
    out = d.tick("91.9", after=750)  # 8.1% below 100, 5 s after it (T0+250 -> T0+5250)
    [change] = changes(out)
    assert (change.scope, change.state) == (BTC, "reduce_only")
    [trip] = change.trips
    assert trip.breaker == "flash_crash" and trip.value == Decimal("0.0810") and trip.limit == Decimal("0.08")
    assert trip.events == [2, d.seq]  # the ticker at 100 and the one at 91.9
    assert cancel_alls(out) == []  # reducing, not halted: closing orders stay

    slow = live(flash_crash=FlashCrash(move=Decimal("0.08"), window_ms=5_000))
    for i in range(1, 11):
        slow.tick(str(100 - i), after=1_000)
        slow.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert slow.state_of(BTC) == "ok"  # 10% over 10 s: never 8% within 5 s


def test_a_cool_down_closes_a_breaker_that_long_after_its_condition_ended_and_not_before() -> None:
    d = live(flash_crash=FlashCrash(move=Decimal("0.05"), window_ms=5_000, cooldown_ms=10_000))
    d.tick("90")  # at T0+750, 100 was at T0+250
    assert d.state_of(BTC) == "reduce_only"
    for _ in range(14):  # the drop holds until 100 leaves the window (T0+5250), then cools down 10 s
        d.tick("90", after=1_000)
        d.tick("100", symbol="ETH/USDT:USDT", after=0)
        assert d.state_of(BTC) == "reduce_only"
    assert d.state.latches[BTC]["flash_crash"].cleared_at == T0 + 5_750
    d.tick("90", after=1_000)  # T0+15750: 10 s after it ended
    assert d.state_of(BTC) == "ok"


def test_a_position_over_its_limit_reduces_its_market_and_exposure_over_the_limit_reduces_everything() -> None:
    d = live(
        position=PositionLimit(limits={"BTC/USDT:USDT": Decimal("0.5")}), exposure=RiskConfig().exposure.__class__(limit=Decimal(30_000))
    )
    d.position("0.4", mark_price="60000")
    assert d.state_of(BTC) == "ok" and d.state_of("global") == "ok"
    out = d.position("0.6", side="short", mark_price="60000")
    by_scope = {c.scope: c for c in changes(out)}
    assert by_scope[BTC].state == "reduce_only" and by_scope[BTC].trips[0].value == Decimal("0.6")
    assert by_scope["global"].state == "reduce_only" and by_scope["global"].trips[0].value == Decimal(36_000) * 1  # 0.6 x 60000
    assert by_scope["global"].trips[0].breaker == "exposure"


def test_exposure_counts_every_market_together() -> None:
    d = live(exposure=RiskConfig().exposure.__class__(limit=Decimal(50_000)))
    d.position("0.5", mark_price="60000")  # 30,000
    assert d.state_of("global") == "ok"
    d.position("8", symbol="ETH/USDT:USDT", mark_price="3000")  # + 24,000
    assert d.state_of("global") == "reduce_only"


def test_refusals_over_the_rate_halt_the_account_but_the_grids_ordinary_refusals_do_not() -> None:
    d = live()
    for i in range(12):
        d.create(f"p{i}", "rejected", reason="post_only_would_take")
    assert d.state_of("account.sim.main") == "ok"
    for i in range(5):
        d.create(f"ok{i}")
    out = []
    for i in range(5):
        out += d.create(f"bad{i}", "rejected", reason="insufficient_balance")
    [change] = changes(out)
    assert (change.scope, change.state, change.trips[0].breaker) == ("account.sim.main", "halted", "reject_rate")
    assert change.trips[0].value == Decimal("0.5")
    assert {c.symbol for c in cancel_alls(out)} == {"BTC/USDT:USDT", "ETH/USDT:USDT"}


def test_slow_answers_in_a_row_reduce_the_venue_and_a_fast_one_lets_the_cool_down_close_it() -> None:
    d = live(latency=Latency(limit_ms=2_000, samples=3, cooldown_ms=1_000))
    d.create("a", took_ms=2_500)
    d.create("b", took_ms=100)  # a fast one in between: no trip
    d.create("c", took_ms=2_500)
    d.create("d", took_ms=2_500)
    assert d.state_of("venue.sim") == "ok"
    d.create("e", took_ms=3_000)
    change = d.state.published["venue.sim"]
    assert change.state == "reduce_only" and change.trips[0].value == Decimal(2_500)
    d.tick("100", after=0)
    d.tick("100", symbol="ETH/USDT:USDT", after=0)
    d.create("f", took_ms=50)
    assert d.state_of("venue.sim") == "reduce_only"  # ended, cooling down
    d.tick("100", after=1_000)
    assert d.state_of("venue.sim") == "ok"


def test_a_position_near_its_liquidation_price_reduces_its_market() -> None:
    d = live()
    d.position("1", mark_price="60000", liquidation_price="50000")
    assert d.state_of(BTC) == "ok"
    d.position("1", mark_price="52000", liquidation_price="50000")  # 3.8% away
    assert d.state.published[BTC].trips[0].breaker == "liquidation"


def test_margin_ratio_below_its_floor_reduces_the_account() -> None:
    d = live(margin=RiskConfig().margin.__class__(min_ratio=Decimal("0.2")))
    d.balance("10000")
    d.position("1", mark_price="40000")  # 10,000 / 40,000 = 0.25
    assert d.state_of("account.sim.main") == "ok"
    d.position("1", mark_price="40000", unrealized_pnl="-3000")  # 7,000 / 40,000
    [trip] = d.state.published["account.sim.main"].trips
    assert trip.breaker == "margin" and trip.value == Decimal("0.1750")


def test_the_daily_loss_limit_halts_everything_counting_only_what_was_lost_today() -> None:
    d = live(daily_loss=RiskConfig().daily_loss.__class__(limit=Decimal(1_000)))
    d.position("1", mark_price="60000", realized_pnl="-5000")  # first seen: its history is not today's loss
    assert d.state_of("global") == "ok"
    d.position("1", mark_price="60000", realized_pnl="-5500", unrealized_pnl="-400")
    assert d.state_of("global") == "ok"  # 900 lost since the day began for it
    out = d.position("1", mark_price="60000", realized_pnl="-5700", unrealized_pnl="-400")  # 1,100
    [change] = changes(out)
    assert (change.scope, change.state, change.trips[0].value) == ("global", "halted", Decimal(1_100))
    assert len(cancel_alls(out)) == 2
    d.at(T0 + 86_400_000)  # a new UTC day: its baseline is where the last one ended
    d.tick("100", after=0)
    d.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert d.state.day_marks == {"sim|main|BTC/USDT:USDT": Decimal(-6_100)}
    d.control("reset")
    assert d.state_of("global") == "ok"


def test_an_operator_halts_a_scope_at_once_and_only_an_operator_closes_it() -> None:
    d = live()
    out = d.control("halt", "venue.sim")
    [change] = changes(out)
    assert (change.scope, change.state, change.trips[0].breaker) == ("venue.sim", "halted", "operator")
    assert len(cancel_alls(out)) == 2
    d.wait(1_000_000)  # no cool-down closes an operator's halt (the feeds are stale by now too)
    assert d.state_of("venue.sim") == "halted"
    d.control("reset", "venue.sim")
    assert d.state_of("venue.sim") == "ok"


def test_garbage_prices_are_refused_and_never_trip_anything() -> None:
    d = live()
    d.tick("1000")  # ten times the last price: garbage, not a move
    assert d.refused and "away from the last price" in d.refused[0]
    assert d.state_of(BTC) == "ok"


def test_a_replay_from_a_checkpoint_decides_exactly_what_the_live_run_decided() -> None:
    def run(checkpoint_at: int | None) -> list[str]:
        d = live(latency=Latency(limit_ms=1_000, samples=2))
        script = [
            lambda: d.tick("95", after=1_000),
            lambda: d.create("a", took_ms=1_500),
            lambda: d.tick("89", after=1_000),
            lambda: d.create("b", took_ms=1_500),
            lambda: d.wait(7_000),
            lambda: d.control("reset"),
            lambda: d.tick("90"),
        ]
        for i, step in enumerate(script):
            if i == checkpoint_at:  # what the runtime stores and loads
                d.state = msgspec.json.decode(msgspec.json.encode(d.state), type=RiskState)
            step()
        return [o.id for o in d.out]

    straight = run(None)
    assert len(straight) >= 4
    assert all(run(i) == straight for i in range(7))


def test_a_breaker_turned_off_never_trips() -> None:
    from monitors.risk.config import FeedStale

    d = live(feed_stale=FeedStale(enabled=False))
    d.wait(60_000)
    assert d.state.published == {}


def test_by_default_a_stale_feed_reopens_a_minute_after_its_data_came_back() -> None:
    d = live()
    d.wait(6_000)
    assert d.state_of(BTC) == "halted"
    for _ in range(60):  # data again from the first of these: 59 s later it is still closed
        d.tick("100", after=1_000)
        d.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert d.state_of(BTC) == "halted"
    d.tick("100", after=1_000)
    d.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert d.state_of(BTC) == "ok"


def test_an_operator_naming_a_scope_no_watched_market_has_is_refused_and_nothing_latches() -> None:
    d = live()
    for scope in ("venue sim", "symbol.sim.BTC/USDT:USDT", "venue.other"):
        out = d.control("halt", scope)
        assert changes(out) == [] and alerts(out)[0].kind == "unknown_scope" and scope in alerts(out)[0].message
    assert d.state.latches == {} and d.state.published == {}


def test_a_pause_does_not_lower_an_operators_halt() -> None:
    d = live()
    d.control("halt", "venue.sim")
    assert changes(d.control("pause", "venue.sim", operator="bob")) == []
    assert d.state_of("venue.sim") == "halted"


def test_a_control_dated_ahead_of_the_clock_does_not_make_the_feeds_look_stale() -> None:
    d = live()
    d.ts += 4_900  # the operator's clock runs ahead (admission allows up to 5 s)
    out = d.control("reset")
    assert changes(out) == [] and d.state.now == T0 + 500
    d.ts -= 4_900
    d.tick("100")
    d.tick("100", symbol="ETH/USDT:USDT", after=0)
    assert d.state.published == {}
