"""The funding monitor's surviving mutants (tools/mutate.py, target `funding`), each pinned by the
behaviour it broke: the inclusive bounds of what the core accepts, what each event carries into
the snapshot (fees, predicted rates, next funding times, the pair's margin), each venue's TTL on
either leg, the publishing cadence over several pairs, the direction's tie-break, the reasons'
exact text, and APRs that round the same whatever the ambient decimal context."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Any

import pytest

from monitors.funding.config import FundingConfig
from monitors.funding.core import MAX_INTERVAL_MS, FundingCore, interval_ms
from monitors.funding.spread import Terms, snapshot
from monitors.funding.testing import HOUR_MS, PERP, SPOT, T0, FundingDriver, book, funding, sim_markets, spot_perp
from schemas.ops import FundingSpread, SpreadLeg

TTL = 30_000
TERMS = Terms(hold_hours=Decimal(72), slippage=Decimal("0.0002"), borrow_rate=Decimal("0.00001"), margin=True)
Q = Decimal("1e-8")


def perp_leg(
    rate: str | None,
    venue: str = "sim",
    ts: int = T0,
    interval_h: int = 8,
    bid: str | None = "60000",
    ask: str | None = "60000.1",
    book_ts: int | None = None,
) -> SpreadLeg:
    return SpreadLeg(
        venue=venue,
        symbol=PERP,
        kind="swap",
        funding_rate=None if rate is None else Decimal(rate),
        interval_ms=interval_h * HOUR_MS if rate is not None else 0,
        next_funding_time=T0 + HOUR_MS if rate is not None else 0,
        funding_ts=ts if rate is not None else 0,
        bid=None if bid is None else Decimal(bid),
        ask=None if ask is None else Decimal(ask),
        book_ts=ts if book_ts is None else book_ts,
        fee=Decimal("0.0005"),
    )


def spot_leg(venue: str = "sim", ts: int = T0, funding_rate: Decimal | None = Decimal(0), book_ts: int | None = None) -> SpreadLeg:
    return SpreadLeg(
        venue=venue,
        symbol=SPOT,
        kind="spot",
        funding_rate=funding_rate,
        bid=Decimal("59990"),
        ask=Decimal("59990.02"),
        book_ts=ts if book_ts is None else book_ts,
        fee=Decimal("0.001"),
    )


def snap(a: SpreadLeg, b: SpreadLeg, now: int = T0, terms: Terms = TERMS) -> FundingSpread:
    return snapshot("main", "btc", (a, b), (TTL, TTL), terms, now)


def live(cfg: FundingConfig | None = None, rate: str = "0.0001", **kw: Any) -> FundingDriver:
    """Both legs of the first (spot-perp on `sim`) pair seen at T0."""
    d = FundingDriver(cfg or FundingConfig(pairs=[spot_perp()]))
    d.feed(book("60000", "60000.01", T0, symbol=SPOT))
    d.feed(book("60000", "60000.1", T0))
    d.feed(funding(rate, T0, **kw))
    return d


# ----------------------------------------------------------------------------- what the core accepts


@pytest.mark.parametrize(("text", "ms"), [("1s", 1_000), ("1000ms", 1_000), ("7d", MAX_INTERVAL_MS), ("168h", MAX_INTERVAL_MS)])
def test_the_shortest_and_the_longest_funding_intervals_are_accepted(text: str, ms: int) -> None:
    assert interval_ms(text) == ms


@pytest.mark.parametrize("text", ["999ms", "169h", "8d"])
def test_an_interval_just_outside_1s_to_7d_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="outside 1s..7d"):
        interval_ms(text)


def test_a_rate_of_exactly_the_cap_is_accepted_and_the_refusal_beyond_it_names_the_field() -> None:
    d = live(rate="0.05", predicted="-0.05")
    assert d.refused == [] and d.last().state == "ok" and d.last().apr == Decimal("54.75")
    d.feed(funding("0.0501", T0 + 1))
    assert d.refused == ["rejected by the core: `funding_rate` 0.0501 per 8h is beyond any venue's cap (0.05)"]


def test_a_next_funding_time_of_zero_or_exactly_seven_days_ahead_is_accepted_one_ms_more_is_not() -> None:
    d = live(next_funding_time=0)  # a venue that does not say when
    assert d.refused == [] and d.last().state == "ok" and d.last().next_funding_time == 0
    d.feed(funding("0.0001", T0 + 1, next_funding_time=T0 + 1 + MAX_INTERVAL_MS))
    assert d.refused == [] and d.last().next_funding_time == T0 + 1 + MAX_INTERVAL_MS
    d.feed(funding("0.0001", T0 + 2, next_funding_time=T0 + 2 + MAX_INTERVAL_MS + 1))
    assert len(d.refused) == 1 and "next_funding_time" in d.refused[0]


def test_a_funding_as_new_as_the_legs_last_is_taken_not_ignored_as_older() -> None:
    d = live(rate="0.0001")
    [revised] = d.feed(funding("0.0002", T0))
    assert revised.apr == Decimal("0.219") and d.state.legs[f"sim|{PERP}"].funding_rate == Decimal("0.0002")


def test_every_leg_without_market_rules_is_named() -> None:
    with pytest.raises(ValueError) as raised:
        FundingCore(FundingConfig(pairs=[spot_perp(venue="other")]), sim_markets("sim"))
    assert str(raised.value) == "no market rules for other|BTC/USDT, other|BTC/USDT:USDT"


def test_the_core_remembers_when_it_started_and_the_last_input_it_folded() -> None:
    d = FundingDriver()
    d.feed(book("60000", "60000.01", T0 + 5, symbol=SPOT))
    d.feed(book("60000", "60000.1", T0 + 10))
    assert (d.state.started, d.state.now, d.state.seq) == (T0 + 5, T0 + 10, 2)
    d.at(T0 + 20)
    assert (d.state.started, d.state.now, d.state.seq) == (T0 + 5, T0 + 20, 3)


# ----------------------------------------------------------------------------- what the snapshot carries


def test_the_snapshot_carries_each_legs_taker_fee_and_costs_by_it() -> None:
    s = live().last()
    assert (s.long.kind, s.long.fee, s.short.kind, s.short.fee) == ("spot", Decimal("0.001"), "swap", Decimal("0.0005"))
    slip = Decimal("0.0002")
    spot_trade = Decimal("0.001") + Decimal("0.01") / Decimal("120000.01") + slip
    perp_trade = Decimal("0.0005") + Decimal("0.1") / Decimal("120000.1") + slip
    assert s.cost_apr == (2 * (spot_trade + perp_trade) * 8760 / Decimal(72)).quantize(Q)


def test_a_spot_legs_funding_is_zero_in_the_snapshot() -> None:
    s = live().last()
    assert s.long.kind == "spot" and s.long.funding_rate == Decimal(0)


def test_the_predicted_rate_and_next_funding_time_of_the_event_reach_the_snapshot() -> None:
    s = live(rate="0.0001", predicted="0.0003", next_funding_time=T0 + 2 * HOUR_MS).last()
    assert s.short.predicted_rate == Decimal("0.0003") and s.predicted_apr == Decimal("0.3285")
    assert s.short.next_funding_time == T0 + 2 * HOUR_MS and s.next_funding_time == T0 + 2 * HOUR_MS


def test_a_margin_short_is_flagged_only_on_a_pair_configured_without_margin() -> None:
    allowed = live(FundingConfig(pairs=[spot_perp(margin=True)]), rate="-0.0002").last()
    assert (allowed.state, allowed.use_margin, allowed.reason) == ("ok", True, "")
    refused = live(FundingConfig(pairs=[spot_perp(margin=False)]), rate="-0.0002").last()
    assert refused.reason == "margin_unavailable: holding sim BTC/USDT short needs margin, which pair btc has off"


def test_the_first_legs_venue_ttl_applies_to_it() -> None:
    d = live(FundingConfig(pairs=[spot_perp()], ttl_ms=5_000, ttl_ms_by_venue={"sim": 60_000}))
    [s] = d.at(T0 + 30_000)
    assert s.state == "ok"  # both legs on sim, 30 s old, within sim's 60 s
    [s] = d.at(T0 + 60_001)
    assert s.state == "stale" and s.reason.startswith("sim BTC/USDT: ticker 60001 ms old (ttl 60000 ms)")


def test_a_pair_not_due_does_not_keep_the_next_one_from_publishing() -> None:
    cfg = FundingConfig(pairs=[spot_perp("a", venue="sim"), spot_perp("b", venue="sim2")], publish_ms=3_600_000)
    d = FundingDriver(cfg)
    for venue in ("sim", "sim2"):
        d.feed(book("60000", "60000.01", T0, venue=venue, symbol=SPOT))
        d.feed(book("60000", "60000.1", T0, venue=venue))
        d.feed(funding("0.0001", T0, venue=venue))
    [b] = d.feed(funding("0.0002", T0 + 10, venue="sim2"))
    assert (b.pair, b.apr) == ("b", Decimal("0.219"))


def test_the_cores_snapshot_of_a_pair_is_the_one_it_published() -> None:
    d = live(rate="-0.0002", predicted="-0.0001")
    assert d.core.snapshot(d.state, d.cfg.pairs[0]) == d.last()


# ----------------------------------------------------------------------------- the calculator


def test_ties_go_long_spot_even_when_the_perpetuals_venue_sorts_first() -> None:
    for legs in ((spot_leg(venue="b"), perp_leg("0", venue="a")), (perp_leg("0", venue="a"), spot_leg(venue="b"))):
        s = snap(*legs)
        assert (s.long.kind, s.short.kind, s.use_margin, s.borrow_apr) == ("spot", "swap", False, 0)


def test_a_spot_legs_funding_counts_as_zero_whatever_the_leg_says() -> None:
    zero = snap(spot_leg(), perp_leg("0.0001"))
    for said in (None, Decimal("0.0005"), Decimal("-0.0005")):
        s = snap(spot_leg(funding_rate=said), perp_leg("0.0001"))
        assert (s.spread, s.apr, s.predicted_apr, s.net_apr) == (zero.spread, zero.apr, zero.predicted_apr, zero.net_apr), said


def test_a_one_sided_book_or_one_without_a_time_is_no_ticker() -> None:
    for leg in (perp_leg("0.0001", ask=None), perp_leg("0.0001", bid=None), perp_leg("0.0001", book_ts=0)):
        s = snap(spot_leg(), leg)
        assert (s.state, s.reason, s.apr) == ("missing", "sim BTC/USDT:USDT: no ticker yet", None)


def test_reasons_are_joined_by_semicolons() -> None:
    now = T0 + TTL + 1
    missing = snap(spot_leg(ts=T0), perp_leg(None, ts=now), now=now)
    assert missing.reason == "sim BTC/USDT:USDT: no funding yet; sim BTC/USDT: ticker 30001 ms old (ttl 30000 ms)"
    stale = snap(spot_leg(ts=T0), perp_leg("0.0001", ts=T0), now=now)
    assert stale.reason == (
        "sim BTC/USDT: ticker 30001 ms old (ttl 30000 ms); "
        "sim BTC/USDT:USDT: funding 30001 ms old (ttl 30000 ms); "
        "sim BTC/USDT:USDT: ticker 30001 ms old (ttl 30000 ms)"
    )


def test_without_a_next_funding_time_the_snapshot_says_zero() -> None:
    assert snap(spot_leg(), perp_leg(None)).next_funding_time == 0


def test_the_id_names_the_monitor_and_the_pair() -> None:
    assert snap(spot_leg(), perp_leg("0.0001")).id.startswith("funding:main:btc:")


def test_aprs_round_half_even_whatever_the_ambient_decimal_context() -> None:
    legs = (spot_leg(), perp_leg("0.0000123456789", interval_h=1))  # 0.108148147164 a year
    s = snap(*legs)
    assert s.apr == Decimal("0.10814815")
    for rounding in (ROUND_FLOOR, ROUND_CEILING):
        with localcontext() as ctx:
            ctx.rounding = rounding
            assert snap(*legs) == s, rounding
