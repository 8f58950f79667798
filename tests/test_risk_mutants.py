"""Tests that pin down the risk core where mutation testing (`make mutate MUTATE=risk`) showed the
suite could not tell a changed decision from the right one."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from monitors.risk.config import (
    DailyLoss,
    Exposure,
    FeedStale,
    FlashCrash,
    Latency,
    Liquidation,
    Margin,
    PositionLimit,
    Rejects,
    RiskConfig,
    Watched,
)
from monitors.risk.core import RiskCore
from monitors.risk.state import RiskState
from schemas import ids
from schemas.account import Balance, Position
from schemas.codec import encode
from schemas.ops import BreakerChange, ControlCommand, RiskAlert, Trip
from testkit.events import order_update, place
from testkit.risk import T0, RiskDriver, alerts, cancel_alls, changes, markets_of

BTC = "symbol.sim.BTC-USDT-USDT"
ETH = "symbol.sim.ETH-USDT-USDT"
ACCOUNT = "account.sim.main"
D = Decimal
QUIET: dict[str, Any] = dict(feed_stale=FeedStale(enabled=False), liquidation=Liquidation(enabled=False))  # only what a test looks at


def live(**kw: Any) -> RiskDriver:
    d = RiskDriver(**kw)
    d.at(T0)
    d.tick("100")
    d.tick("100", symbol="ETH/USDT:USDT")
    return d


def quiet(**kw: Any) -> RiskDriver:
    d = RiskDriver(**{**QUIET, **kw})
    d.at(T0)
    return d


def only_change(out: list[Any]) -> BreakerChange:
    [change] = changes(out)
    return change


def change_id(change: BreakerChange, seq: int) -> str:
    fields = dict(instance=change.instance, scope=change.scope, state=change.state, previous=change.previous,
                  reason=change.reason, trips=change.trips, ts=change.ts)  # fmt: skip
    return ids.content_id(f"breaker:{change.instance}", {**fields, "seq": seq})


def checkpointed(d: RiskDriver) -> None:
    """What the runtime stores and loads: the state must survive it."""
    d.state = msgspec.json.decode(msgspec.json.encode(d.state), type=RiskState)


def balance(d: RiskDriver, total: str, account: str = "main") -> list[Any]:
    d.ts += 1
    fields: dict[str, Any] = dict(
        venue="sim", account=account, asset="USDT", free=D(total), used=D(0), total=D(total), ts=d.ts, ts_local=d.ts
    )
    return d.feed(Balance(id=ids.content_id("bal", fields), **fields))


def position(d: RiskDriver, contracts: str, account: str = "main", symbol: str = "BTC/USDT:USDT", **kw: Any) -> list[Any]:
    d.ts += 1
    fields: dict[str, Any] = dict(venue="sim", account=account, symbol=symbol, side="long" if D(contracts) else None,
                                  contracts=D(contracts), ts=d.ts, ts_local=d.ts)  # fmt: skip
    fields.update({k: D(v) if isinstance(v, str) else v for k, v in kw.items()})
    return d.feed(Position(id=ids.content_id("pos", fields), **fields))


def answer(
    d: RiskDriver, cid: str, sent: int, took: int, status: str = "open", venue: str = "sim", account: str = "main", **kw: Any
) -> list[Any]:
    d.feed(place(cid, ts=sent, venue=venue, account=account))
    return d.feed(order_update(cid, status, ts=sent + took, ts_local=sent + took, venue=venue, account=account, **kw))


def drift(d: RiskDriver, **kw: Any) -> list[Any]:
    d.ts += 1
    fields: dict[str, Any] = dict(instance="recon", severity="critical", kind="position_drift", message="venue holds 0.3, we hold 0.1",
                                  venue="sim", symbol="BTC/USDT:USDT", value=D("0.2"), threshold=D("0.01"), ts=d.ts)  # fmt: skip
    fields.update(kw)
    return d.feed(RiskAlert(id=ids.content_id("alert", fields), **fields))


# ------------------------------------------------------------------ construction


def test_a_core_without_the_rules_of_a_watched_market_refuses_to_start_and_names_it() -> None:
    cfg = RiskConfig()
    markets = markets_of(cfg)
    del markets["sim|ETH/USDT:USDT"]
    with pytest.raises(ValueError, match=r"^no market rules for sim\|ETH/USDT:USDT$"):
        RiskCore(cfg, markets)
    del markets["sim|BTC/USDT:USDT"]
    with pytest.raises(ValueError, match=r"^no market rules for sim\|BTC/USDT:USDT, sim\|ETH/USDT:USDT$"):
        RiskCore(cfg, markets)


# ------------------------------------------------------------------ feed staleness


def test_a_stale_feed_trips_only_past_its_ttl_with_when_it_last_spoke_as_evidence() -> None:
    d = RiskDriver()
    d.at(T0)
    d.tick("100")  # BTC at T0+250, input 2; ETH never speaks
    assert changes(d.at(T0 + 5_000)) == []  # ETH silent exactly its TTL: not yet
    out = d.at(T0 + 5_001)
    change = only_change(out)
    assert change.scope == ETH and change.id == change_id(change, d.seq)
    detail = "no market data on sim ETH/USDT:USDT for 5001 ms (none since the monitor started)"
    assert change.trips == [
        Trip(breaker="feed_stale", state="halted", value=D(5_001), limit=D(5_000), detail=detail, since=T0 + 5_000, events=[])
    ]
    assert change.reason == f"feed_stale: {detail}" and change.ts == T0 + 5_001
    [cancel] = cancel_alls(out)
    assert (cancel.symbol, cancel.reason, cancel.ts, cancel.ttl_ms) == (
        "ETH/USDT:USDT",
        f"{ETH} halted: feed_stale: {detail}",
        T0 + 5_001,
        300_000,
    )
    fields = dict(
        venue="sim", account="main", symbol="ETH/USDT:USDT", origin="risk:main", reason=cancel.reason, ts=T0 + 5_001, ttl_ms=300_000
    )
    assert cancel.id == ids.content_id("risk-cancel:main", {**fields, "seq": d.seq})

    assert changes(d.at(T0 + 5_250)) == []  # BTC silent exactly 5000 ms
    change = only_change(d.at(T0 + 5_251))
    detail = f"no market data on sim BTC/USDT:USDT for 5001 ms (last at {T0 + 250})"
    assert change.trips == [
        Trip(breaker="feed_stale", state="halted", value=D(5_001), limit=D(5_000), detail=detail, since=T0 + 5_250, events=[2])
    ]


def test_a_ticker_as_old_as_the_last_one_still_counts() -> None:
    d = live(flash_crash=FlashCrash(move=D("0.05")))
    d.tick("100")
    out = d.tick("90", after=0)  # the same venue millisecond, a new price
    assert only_change(out).trips[0].breaker == "flash_crash"


# ------------------------------------------------------------------ flash crash


def test_a_sharp_rise_from_the_windows_low_trips_with_evidence_saying_it_rose() -> None:
    d = live(flash_crash=FlashCrash(move=D("0.08"), window_ms=5_000))
    d.tick("95")
    low = d.seq
    out = d.tick("104")  # 4% above the first price, 9.47% above the low in between
    change = only_change(out)
    detail = "sim BTC/USDT:USDT rose from 95 to 104 in 250 ms"
    assert change.trips == [
        Trip(breaker="flash_crash", state="reduce_only", value=D("0.0947"), limit=D("0.08"), detail=detail, since=d.ts, events=[low, d.seq])
    ]


def test_a_sharp_drop_trips_with_evidence_saying_it_fell() -> None:
    d = live(flash_crash=FlashCrash(move=D("0.05"), window_ms=5_000))
    d.tick("99")
    out = d.tick("90", after=1_000)
    detail = "sim BTC/USDT:USDT fell from 100 to 90 in 1500 ms"
    assert only_change(out).trips == [
        Trip(breaker="flash_crash", state="reduce_only", value=D("0.1000"), limit=D("0.05"), detail=detail, since=d.ts, events=[2, d.seq])
    ]


def test_a_small_rise_within_the_window_trips_nothing() -> None:
    d = live(flash_crash=FlashCrash(move=D("0.05"), window_ms=5_000))
    d.tick("101")
    d.tick("104")
    assert d.state.published == {}


def test_a_flash_crash_breaker_turned_off_never_trips() -> None:
    d = live(flash_crash=FlashCrash(move=D("0.05"), enabled=False))
    d.tick("80")
    d.tick("100")
    assert d.state.published == {}


# ------------------------------------------------------------------ positions, exposure, liquidation, margin


def test_a_position_trips_only_beyond_its_limit_counting_contracts_times_their_size_with_its_sign() -> None:
    d = quiet(position=PositionLimit(limits={"BTC/USDT:USDT": D("0.5")}))
    position(d, "50", contract_size="0.01")  # 0.5 BTC: at the limit
    assert d.state.published == {}
    d.ts += 1
    fields: dict[str, Any] = dict(venue="sim", account="main", symbol="BTC/USDT:USDT", side="short", contracts=D(60),
                                  contract_size=D("0.01"), ts=d.ts, ts_local=d.ts)  # fmt: skip
    change = only_change(d.feed(Position(id="short", **fields)))
    assert change.trips == [
        Trip(breaker="position", state="reduce_only", value=D("0.60"), limit=D("0.5"), detail="main holds -0.60 BTC/USDT:USDT on sim",
             since=d.state.now, events=[d.seq])
    ]  # fmt: skip
    long = only_change(quiet(position=PositionLimit(limits={"BTC/USDT:USDT": D("0.5")})).position("0.7"))
    assert long.trips[0].detail == "main holds 0.7 BTC/USDT:USDT on sim"


def test_a_position_limit_turned_off_never_trips() -> None:
    d = quiet(position=PositionLimit(limits={"BTC/USDT:USDT": D("0.5")}, enabled=False))
    position(d, "9")
    assert d.state.published == {}


def test_a_symbol_with_the_keys_separator_in_its_name_is_still_judged() -> None:
    d = quiet(position=PositionLimit(limits={"X|Y/USDT:USDT": D(1)}))
    out = position(d, "2", symbol="X|Y/USDT:USDT")
    assert d.refused == [] and only_change(out).scope == "symbol.sim.X_7CY-USDT-USDT"


def test_exposure_trips_only_beyond_its_limit_with_every_held_position_as_evidence() -> None:
    d = quiet(exposure=Exposure(limit=D(50_000)))
    position(d, "0.5", mark_price="60000")  # 30,000
    flat = position(d, "0", symbol="SOL/USDT:USDT", mark_price="150")  # flat: worth nothing, no evidence
    assert flat == [] and d.refused == []
    position(d, "4", symbol="ETH/USDT:USDT", mark_price="5000")  # + 20,000: at the limit
    assert d.state.published == {}
    out = position(d, "4", symbol="ETH/USDT:USDT", mark_price="5000.01")
    change = only_change(out)
    assert change.scope == "global"
    assert change.trips == [
        Trip(breaker="exposure", state="reduce_only", value=D("50000.04"), limit=D(50_000),
             detail="positions worth 50000.04 together", since=d.state.now, events=[2, d.seq])
    ]  # fmt: skip


def test_liquidation_trips_only_nearer_than_its_floor_with_the_marks_as_evidence() -> None:
    d = RiskDriver(feed_stale=FeedStale(enabled=False))
    d.at(T0)
    position(d, "1", mark_price="100", liquidation_price="95")  # exactly 5% away
    assert d.state.published == {}
    out = position(d, "1", mark_price="100", liquidation_price="95.5")
    assert only_change(out).trips == [
        Trip(breaker="liquidation", state="reduce_only", value=D("0.0450"), limit=D("0.05"),
             detail="BTC/USDT:USDT on sim: mark 100, liquidation at 95.5", since=d.state.now, events=[d.seq])
    ]  # fmt: skip


def two_accounts(**kw: Any) -> RiskConfig:
    watch = [
        Watched(venue="sim", account="main", symbols=["BTC/USDT:USDT"]),
        Watched(venue="sim", account="alt", symbols=["BTC/USDT:USDT"]),
    ]
    return RiskConfig(watch=watch, **{**QUIET, **kw})


def test_margin_sums_an_accounts_positions_and_trips_only_below_its_floor() -> None:
    d = RiskDriver(two_accounts(margin=Margin(min_ratio=D("0.2"))))
    d.at(T0)
    position(d, "1", account="main", mark_price="1000")  # main has no balance: not judged
    balance(d, "1000", account="alt")
    position(d, "1", account="alt", mark_price="3000", unrealized_pnl="300")
    first = d.seq
    position(d, "1", account="alt", symbol="ETH/USDT:USDT", mark_price="2000", unrealized_pnl="-300")  # 1000 / 5000: at the floor
    assert d.state.published == {}
    out = position(d, "1", account="alt", symbol="ETH/USDT:USDT", mark_price="2000", unrealized_pnl="-301")
    change = only_change(out)
    assert change.scope == "account.sim.alt"
    assert change.trips == [
        Trip(breaker="margin", state="reduce_only", value=D("0.1998"), limit=D("0.2"),
             detail="alt on sim: equity 999 for positions worth 5000", since=d.state.now, events=[first, d.seq])
    ]  # fmt: skip


def test_a_margin_breaker_turned_off_never_trips() -> None:
    d = quiet(margin=Margin(min_ratio=D("0.2"), enabled=False))
    d.balance("100")
    position(d, "1", mark_price="60000")
    assert d.state.published == {}


def test_the_daily_loss_trips_only_beyond_its_limit_with_every_position_as_evidence() -> None:
    d = quiet(daily_loss=DailyLoss(limit=D(1_000)))
    position(d, "1", mark_price="60000")
    first = d.seq
    position(d, "1", symbol="ETH/USDT:USDT", mark_price="3000")  # the day begins here for it
    position(d, "1", symbol="ETH/USDT:USDT", mark_price="3000", unrealized_pnl="-1000")  # exactly the limit
    assert d.state.published == {}
    out = position(d, "1", symbol="ETH/USDT:USDT", mark_price="3000", unrealized_pnl="-1000.5")
    assert only_change(out).trips == [
        Trip(breaker="daily_loss", state="halted", value=D("1000.5"), limit=D(1_000),
             detail="lost 1000.5 since 00:00 UTC (realized plus unrealized)", since=d.state.now, events=[first, d.seq])
    ]  # fmt: skip


# ------------------------------------------------------------------ refusals


def test_refusals_trip_with_the_rate_when_they_started_and_the_last_ten_as_evidence() -> None:
    d = quiet(rejects=Rejects(rate=D("0.5"), min_count=12))
    seqs = []
    out: list[Any] = []
    for i in range(12):
        out = d.create(f"x{i}", "rejected", reason="insufficient_balance")
        seqs.append(d.seq)
        if i == 0:
            first = d.ts
    change = only_change(out)
    assert change.trips == [
        Trip(breaker="reject_rate", state="halted", value=D("1.0000"), limit=D("0.5"),
             detail="12 of the last 12 creates on sim/main refused or failed", since=first, events=seqs[-10:])
    ]  # fmt: skip


def test_a_few_refusals_below_the_minimum_count_trip_nothing_and_neither_do_fills() -> None:
    d = quiet()
    for i in range(9):
        d.create(f"x{i}", "rejected", reason="insufficient_balance")
    assert d.state.published == {}
    e = quiet()
    for i in range(10):
        e.create(f"ok{i}", "closed")
    assert e.state.published == {}


def test_outcomes_the_venue_never_confirmed_count_as_refused() -> None:
    d = quiet()
    for i in range(10):
        d.create(f"u{i}", "unknown")
    assert d.state_of(ACCOUNT) == "halted"


def test_a_reject_rate_breaker_turned_off_never_trips() -> None:
    d = quiet(rejects=Rejects(enabled=False))
    for i in range(12):
        d.create(f"x{i}", "rejected", reason="insufficient_balance")
    assert d.state.published == {}


def test_an_outcome_exactly_a_window_old_still_counts() -> None:
    d = quiet(rejects=Rejects(rate=D("0.5"), min_count=2, window_ms=60_000))
    answer(d, "a", sent=T0 + 1, took=9, status="rejected", reason="insufficient_balance")  # at T0+10
    answer(d, "b", sent=T0 + 60_000, took=10, status="rejected", reason="insufficient_balance")  # at T0+60010
    assert d.state_of(ACCOUNT) == "halted"


def test_each_account_is_judged_on_its_own_refusals() -> None:
    d = RiskDriver(two_accounts(rejects=Rejects(rate=D("0.5"), min_count=2)))
    d.at(T0)
    answer(d, "m1", sent=T0 + 1, took=1)  # main: fine
    answer(d, "m2", sent=T0 + 3, took=1)
    answer(d, "a1", sent=T0 + 5, took=1, status="rejected", account="alt", reason="insufficient_balance")
    answer(d, "a2", sent=T0 + 7, took=1, status="rejected", account="alt", reason="insufficient_balance")
    assert d.state_of("account.sim.alt") == "halted" and d.state_of(ACCOUNT) == "ok"


def test_a_benign_refusal_ends_the_wait_for_its_create_so_later_answers_to_it_count_for_nothing() -> None:
    d = quiet(rejects=Rejects(rate=D("0.5"), min_count=1))
    d.create("x", "rejected", reason="post_only_would_take")
    d.feed(order_update("x", "rejected", ts=d.ts + 1, ts_local=d.ts + 1, reason="insufficient_balance"))
    assert d.refused == [] and d.state_of(ACCOUNT) == "ok"


def test_only_the_first_answer_to_a_create_counts() -> None:
    d = quiet(latency=Latency(limit_ms=1_000, samples=2))
    d.create("x", took_ms=1_500)
    d.feed(order_update("x", "closed", filled="0.01", ts=d.ts + 1, ts_local=d.ts + 1))
    assert d.state_of("venue.sim") == "ok"


def test_an_answer_from_another_account_or_venue_with_the_same_client_id_is_not_ours() -> None:
    watch = [Watched(venue="sim", account="main", symbols=["BTC/USDT:USDT"]), Watched(venue="sim", account="alt", symbols=["BTC/USDT:USDT"]),
             Watched(venue="other", account="main", symbols=["BTC/USDT:USDT"])]  # fmt: skip
    d = RiskDriver(RiskConfig(watch=watch, rejects=Rejects(rate=D("0.5"), min_count=1), **QUIET))
    d.at(T0)
    d.feed(place("x", ts=T0 + 1))
    d.feed(order_update("x", "rejected", ts=T0 + 2, ts_local=T0 + 2, account="alt", reason="insufficient_balance"))
    d.feed(order_update("x", "rejected", ts=T0 + 3, ts_local=T0 + 3, venue="other", reason="insufficient_balance"))
    d.feed(order_update("y", "rejected", ts=T0 + 4, ts_local=T0 + 4, reason="insufficient_balance"))  # never placed
    assert d.refused == [] and d.state.published == {}


# ------------------------------------------------------------------ latency


def test_slow_answers_trip_with_each_latency_and_when_the_run_began_as_evidence() -> None:
    d = quiet(latency=Latency(limit_ms=2_000, samples=3))
    answer(d, "a", sent=T0 + 10, took=2_001)
    first = d.seq
    answer(d, "b", sent=T0 + 20, took=2_500)
    out = answer(d, "c", sent=T0 + 30, took=3_000)
    assert only_change(out).trips == [
        Trip(breaker="latency", state="reduce_only", value=D(2_001), limit=D(2_000),
             detail="the last 3 answers from sim took 2001, 2500, 3000 ms", since=T0 + 2_011, events=[first, first + 2, d.seq])
    ]  # fmt: skip


def test_an_answer_exactly_at_the_latency_limit_is_not_slow() -> None:
    d = quiet(latency=Latency(limit_ms=2_000, samples=2))
    answer(d, "a", sent=T0 + 10, took=2_000)
    answer(d, "b", sent=T0 + 20, took=2_500)
    assert d.state.published == {}


def test_an_answer_exactly_a_window_old_still_counts_for_latency() -> None:
    d = quiet(latency=Latency(limit_ms=100, samples=2, window_ms=30_000))
    answer(d, "a", sent=T0 + 1, took=200)  # at T0+201
    answer(d, "b", sent=T0 + 30_001, took=200)  # at T0+30201
    assert d.state_of("venue.sim") == "reduce_only"


def test_a_latency_breaker_turned_off_never_trips() -> None:
    d = quiet(latency=Latency(limit_ms=100, samples=1, enabled=False))
    answer(d, "a", sent=T0 + 1, took=500)
    assert d.state.published == {}


def test_an_answer_stamped_before_its_command_counts_as_instant() -> None:
    d = quiet(latency=Latency(limit_ms=0, samples=1))
    answer(d, "a", sent=T0 + 10, took=-5)
    assert d.state.published == {}
    answer(d, "b", sent=T0 + 20, took=1)
    assert d.state_of("venue.sim") == "reduce_only"


def test_each_venue_is_judged_on_its_own_answers() -> None:
    watch = [
        Watched(venue="sim", account="main", symbols=["BTC/USDT:USDT"]),
        Watched(venue="other", account="main", symbols=["BTC/USDT:USDT"]),
    ]
    d = RiskDriver(RiskConfig(watch=watch, latency=Latency(limit_ms=100, samples=1), **QUIET))
    d.at(T0)
    answer(d, "a", sent=T0 + 1, took=10)  # sim: fast, and first in the state
    answer(d, "b", sent=T0 + 2, took=500, venue="other")
    assert d.state_of("venue.other") == "reduce_only" and d.state_of("venue.sim") == "ok"


def test_answers_to_creates_in_flight_together_all_count() -> None:
    d = quiet(latency=Latency(limit_ms=100, samples=2))
    d.feed(place("a", ts=T0 + 1))
    d.feed(place("b", ts=T0 + 2))
    d.feed(order_update("a", ts=T0 + 501, ts_local=T0 + 501))
    d.feed(order_update("b", ts=T0 + 502, ts_local=T0 + 502))
    assert d.state_of("venue.sim") == "reduce_only"


def test_a_create_waits_five_minutes_for_its_answer_and_no_longer() -> None:
    def slow_answers(after_ms: int) -> str:
        d = quiet(latency=Latency(limit_ms=100, samples=1, window_ms=1_000_000))
        d.feed(place("a", ts=T0 + 1))
        d.feed(place("b", ts=T0 + 1 + after_ms))  # a later create forgets those older than five minutes
        d.feed(order_update("a", ts=T0 + 2 + after_ms, ts_local=T0 + 2 + after_ms))
        return d.state_of("venue.sim")

    assert slow_answers(300_000) == "reduce_only"
    assert slow_answers(300_001) == "ok"


def test_only_the_last_four_times_samples_answers_are_kept() -> None:
    d = quiet(latency=Latency(limit_ms=100, samples=2, window_ms=30_000))
    now = T0 + 100_000
    d.at(now)  # time moves with the clock, not with order events
    answer(d, "s1", sent=now, took=500)
    for i in range(8):  # late answers stamped long ago: out of the window
        answer(d, f"old{i}", sent=T0 + i * 10, took=500)
    answer(d, "s2", sent=now + 600, took=500)
    assert d.state_of("venue.sim") == "ok"  # s1 is no longer kept


# ------------------------------------------------------------------ operators and reconcilers


def test_a_control_for_another_component_or_instance_changes_nothing() -> None:
    d = quiet()
    for component, instance in (("grid", "main"), ("risk", "other"), ("grid", "all")):
        d.ts += 1
        fields: dict[str, Any] = dict(target_component=component, target_instance=instance, action="halt", operator="bob", ts=d.ts)
        d.feed(ControlCommand(id=ids.content_id("ctl", fields), **fields))
    assert d.refused == [] and d.state.published == {}
    fields = dict(target_component="risk", target_instance="all", action="halt", operator="bob", ts=d.ts + 1)
    d.feed(ControlCommand(id=ids.content_id("ctl", fields), **fields))
    assert d.state_of("global") == "halted"


def test_an_operators_halt_without_a_scope_halts_everything_with_who_and_why_as_evidence() -> None:
    d = quiet()
    out = d.control("halt")
    change = only_change(out)
    assert (change.scope, change.state) == ("global", "halted")
    assert change.trips == [Trip(breaker="operator", state="halted", detail="alice: halt", since=d.ts, events=[d.seq])]
    assert change.id == change_id(change, d.seq)
    assert {c.symbol for c in cancel_alls(out)} == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    d.ts += 1
    fields: dict[str, Any] = dict(target_component="risk", target_instance="main", action="halt", scope=BTC, reason="x" * 600,
                                  operator="bob", ts=d.ts)  # fmt: skip
    out = d.feed(ControlCommand(id=ids.content_id("ctl", fields), **fields))
    assert only_change(out).trips[0].detail == "bob: " + "x" * 600
    [cancel] = cancel_alls(out)
    assert cancel.reason == (f"{BTC} halted: operator: bob: " + "x" * 600)[:500]


def test_an_operators_pause_reduces_only() -> None:
    d = quiet()
    out = d.control("pause", ETH)
    change = only_change(out)
    assert (change.scope, change.state, change.trips[0].state, change.trips[0].detail) == (
        ETH,
        "reduce_only",
        "reduce_only",
        "alice: pause",
    )
    assert cancel_alls(out) == []


def test_a_refused_reset_says_which_breaker_on_which_scope_still_holds_and_its_evidence() -> None:
    d = live()
    d.wait(5_500)
    trip = d.state.published[BTC].trips[0]
    out = d.control("reset", BTC, operator="carol")
    [alert] = alerts(out)
    fields: dict[str, Any] = dict(component="risk", instance="main", severity="warning", kind="reset_refused",
                                  message=f"carol asked to close feed_stale on {BTC}, but it still holds: {trip.detail}",
                                  value=trip.value, threshold=trip.limit, ts=d.ts)  # fmt: skip
    assert alert == RiskAlert(id=ids.content_id("risk-refusal:main", {**fields, "seq": d.seq}), **fields)
    assert {a.message.split(" on ")[1].split(",")[0] for a in alerts(d.control("reset"))} == {BTC, ETH}


def test_the_evidence_of_a_holding_breaker_is_what_it_showed_when_it_opened() -> None:
    d = live()
    d.tick("100", symbol="ETH/USDT:USDT", after=5_001)  # BTC silent 5251 ms: it opens
    opened = d.state.published[BTC].trips[0]
    assert opened.value == D(5_251)
    assert changes(d.wait(6_000))[0].scope == ETH  # ETH opens too, while BTC still holds (and is silent longer)
    [alert] = alerts(d.control("reset", BTC))
    assert alert.value == opened.value and opened.detail in alert.message
    assert d.state.latches[BTC]["feed_stale"].trip == opened


def test_a_reset_is_refused_when_the_condition_came_back_during_its_cool_down() -> None:
    d = live(feed_stale=FeedStale(ttl_ms=5_000, cooldown_ms=60_000))
    d.tick("100", symbol="ETH/USDT:USDT", after=5_500)
    assert d.state_of(BTC) == "halted"
    d.tick("100", after=0)  # BTC speaks again: cooling down
    d.tick("100", symbol="ETH/USDT:USDT", after=5_001)  # ... and is silent again
    assert d.state.latches[BTC]["feed_stale"].holding
    out = d.control("reset", BTC)
    assert changes(out) == [] and len(alerts(out)) == 1 and d.state_of(BTC) == "halted"


def test_a_reconcilers_drift_reduces_its_market_with_its_evidence_until_an_operator_resets_it() -> None:
    d = quiet()
    out = drift(d)
    change = only_change(out)
    assert (change.scope, change.state) == (BTC, "reduce_only")
    assert change.trips == [Trip(breaker="drift", state="reduce_only", value=D("0.2"), limit=D("0.01"),
                                 detail="venue holds 0.3, we hold 0.1", since=d.ts, events=[d.seq])]  # fmt: skip
    d.wait(10_000_000)
    assert d.state_of(BTC) == "reduce_only"
    checkpointed(d)
    assert only_change(d.control("reset", BTC)).state == "ok"


def test_alerts_other_than_a_drift_on_a_watched_market_change_nothing() -> None:
    d = quiet()
    drift(d, kind="feed_stale")
    drift(d, venue=None)
    drift(d, symbol=None)
    drift(d, symbol="SOL/USDT:USDT")
    drift(d, venue="other")
    assert d.refused == [] and d.state.published == {}


def test_an_operators_halt_keeps_the_other_breakers_of_its_scope_and_lists_every_trip_by_name() -> None:
    d = quiet()
    d.control("pause", BTC)
    drift(d)  # latched after the operator's
    change = only_change(d.control("halt", BTC))
    assert [t.breaker for t in change.trips] == ["drift", "operator"]
    assert change.reason == "drift: venue holds 0.3, we hold 0.1; operator: alice: halt"
    checkpointed(d)
    closed = only_change(d.control("reset", BTC))
    assert (closed.state, closed.trips, closed.reason) == ("ok", [], "every condition cleared and closed")


def test_an_operators_latches_survive_a_checkpoint_and_so_do_creates_in_flight() -> None:
    d = quiet(latency=Latency(limit_ms=100, samples=1))
    d.control("halt", "venue.sim")
    d.feed(place("a", ts=d.ts + 1))
    checkpointed(d)
    d.feed(order_update("a", ts=d.ts + 500, ts_local=d.ts + 500))
    assert d.state.latches["venue.sim"].keys() == {"operator", "latency"}


# ------------------------------------------------------------------ latching


def btc_guards(**kw: Any) -> RiskDriver:
    """BTC with a position limit of 0.5 and a liquidation floor of 5%, each with its cool-down."""
    d = RiskDriver(feed_stale=FeedStale(enabled=False), position=PositionLimit(limits={"BTC/USDT:USDT": D("0.5")}, cooldown_ms=1_000),
                   liquidation=Liquidation(cooldown_ms=1_000), **kw)  # fmt: skip
    d.at(T0)
    return d


def held(d: RiskDriver, big: bool, near: bool) -> None:
    position(d, "1" if big else "0.4", mark_price="100", liquidation_price="99" if near else "50")


def test_two_conditions_of_one_scope_that_start_together_both_latch() -> None:
    d = btc_guards()
    held(d, big=True, near=True)
    assert d.state.latches[BTC].keys() == {"position", "liquidation"}
    assert [t.breaker for t in d.state.published[BTC].trips] == ["liquidation", "position"]


@pytest.mark.parametrize("first", ["position", "liquidation"])
def test_a_second_condition_latches_beside_one_that_holds(first: str) -> None:
    d = btc_guards()
    held(d, big=first == "position", near=first == "liquidation")
    held(d, big=True, near=True)
    assert {n: latch.holding for n, latch in d.state.latches[BTC].items()} == {"position": True, "liquidation": True}


@pytest.mark.parametrize("ending", ["position", "liquidation"])
def test_a_condition_that_ends_beside_one_that_holds_leaves_both_latched(ending: str) -> None:
    d = btc_guards()
    held(d, big=True, near=True)
    held(d, big=ending != "position", near=ending != "liquidation")
    assert {n: latch.holding for n, latch in d.state.latches[BTC].items()} == {
        "position": ending != "position",
        "liquidation": ending != "liquidation",
    }


@pytest.mark.parametrize("ending", ["position", "liquidation"])
def test_a_cool_down_closes_only_its_own_breaker(ending: str) -> None:
    d = btc_guards()
    held(d, big=True, near=True)
    held(d, big=ending != "position", near=ending != "liquidation")
    assert changes(d.wait(1_000)) == []  # one closed by its cool-down; the other still reduces
    assert d.state.latches[BTC].keys() == {"liquidation" if ending == "position" else "position"}


def test_a_reject_rate_breaker_closes_by_its_own_cool_down() -> None:
    d = quiet(rejects=Rejects(rate=D("0.5"), min_count=1, window_ms=1_000, cooldown_ms=5_000))
    d.create("x", "rejected", reason="insufficient_balance")
    assert d.state_of(ACCOUNT) == "halted"
    d.wait(1_001)  # the refusal leaves the window
    d.wait(5_000)
    assert d.state_of(ACCOUNT) == "ok"


def test_a_step_never_changes_the_state_it_was_given() -> None:
    d = live()
    before = d.state
    snapshot = encode(before)
    assert changes(d.wait(6_000))
    assert encode(before) == snapshot
