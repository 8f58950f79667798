"""The spread and APR calculator (seed 1.8's RED list): both legs required, each leg annualized
over its own real interval, the direction from the funding, the costs by the formula, and no
numbers unless both legs are there and fresh."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from monitors.funding.spread import Terms, snapshot
from schemas.ops import FundingSpread, SpreadLeg

T0 = 1_700_000_000_000
HOUR = 3_600_000
TTL = 30_000
TERMS = Terms(hold_hours=Decimal(72), slippage=Decimal("0.0002"), borrow_rate=Decimal("0.00001"), margin=True)
Q = Decimal("1e-8")


def perp(
    rate: str | None,
    interval_h: int = 8,
    venue: str = "sim",
    ts: int = T0,
    book_ts: int | None = None,
    bid: str = "60000",
    ask: str = "60000.1",
    fee: str = "0.0005",
    predicted: str | None = None,
    next_funding_time: int = T0 + HOUR,
) -> SpreadLeg:
    return SpreadLeg(
        venue=venue,
        symbol="BTC/USDT:USDT",
        kind="swap",
        funding_rate=None if rate is None else Decimal(rate),
        predicted_rate=None if predicted is None else Decimal(predicted),
        interval_ms=interval_h * HOUR if rate is not None else 0,
        next_funding_time=next_funding_time if rate is not None else 0,
        funding_ts=ts if rate is not None else 0,
        bid=Decimal(bid),
        ask=Decimal(ask),
        book_ts=ts if book_ts is None else book_ts,
        fee=Decimal(fee),
    )


def spot(venue: str = "sim", ts: int = T0, bid: str = "59990", ask: str = "59990.02", fee: str = "0.001") -> SpreadLeg:
    return SpreadLeg(
        venue=venue,
        symbol="BTC/USDT",
        kind="spot",
        funding_rate=Decimal(0),
        bid=Decimal(bid),
        ask=Decimal(ask),
        book_ts=ts,
        fee=Decimal(fee),
    )


def snap(a: SpreadLeg, b: SpreadLeg, now: int = T0, ttls: tuple[int, int] = (TTL, TTL), terms: Terms = TERMS) -> FundingSpread:
    return snapshot("main", "btc", (a, b), ttls, terms, now)


NUMBERS = ("spread", "apr", "predicted_apr", "cost_apr", "borrow_apr", "net_apr")


def numbers(s: FundingSpread) -> list[Decimal | None]:
    return [getattr(s, k) for k in NUMBERS]


def test_positive_funding_on_the_perpetual_means_long_spot_short_perpetual_without_margin() -> None:
    s = snap(spot(), perp("0.0001"))
    assert s.state == "ok" and s.reason == ""
    assert (s.long.kind, s.short.kind) == ("spot", "swap")
    assert s.use_margin is False and s.borrow_apr == 0
    assert s.spread == Decimal("0.0001")
    assert s.apr == Decimal("0.1095")  # 0.0001 x 1095 eight-hour periods a year
    assert s.symbol == "BTC/USDT:USDT" and s.next_funding_time == T0 + HOUR and s.ts == T0


def test_negative_funding_means_long_perpetual_and_a_margin_short_of_spot_that_pays_borrow_interest() -> None:
    s = snap(spot(), perp("-0.0002"))
    assert (s.long.kind, s.short.kind) == ("swap", "spot")
    assert s.use_margin is True
    assert s.spread == Decimal("0.0002") and s.apr == Decimal("0.219")
    assert s.borrow_apr == Decimal("0.0876")  # 0.00001 an hour, 8760 hours
    assert s.net_apr == s.apr - s.cost_apr - s.borrow_apr
    assert s.reason == ""


def test_a_margin_short_on_a_pair_without_margin_is_said_in_the_reason() -> None:
    s = snap(spot(), perp("-0.0002"), terms=TERMS._replace(margin=False))
    assert s.state == "ok" and s.use_margin is True and s.reason.startswith("margin_unavailable")


def test_two_perpetuals_are_held_long_on_the_lower_funding_and_short_on_the_higher() -> None:
    s = snap(perp("0.0003", venue="sim"), perp("-0.0001", venue="sim2"))
    assert (s.long.venue, s.short.venue) == ("sim2", "sim")
    assert s.use_margin is False and s.borrow_apr == 0
    assert s.spread == Decimal("0.0004") and s.apr == Decimal("0.438")


def test_each_leg_annualizes_over_its_own_real_interval() -> None:
    for hours, apr in ((1, "0.876"), (4, "0.219"), (8, "0.1095")):
        assert snap(spot(), perp("0.0001", interval_h=hours)).apr == Decimal(apr), hours


def test_mixed_intervals_compare_by_apr_not_by_the_rate_per_interval() -> None:
    # 0.0001 an hour (87.6%/y) beats 0.0005 every 8 hours (54.75%/y): the hourly leg is held short
    # although its rate per interval is the lower one.
    hourly, eight_hourly = perp("0.0001", interval_h=1, venue="a"), perp("0.0005", interval_h=8, venue="b")
    s = snap(hourly, eight_hourly)
    assert (s.long.venue, s.short.venue) == ("b", "a")
    assert s.apr == Decimal("0.3285")
    assert s.spread == Decimal("-0.0004")  # short rate minus long rate, each per its own interval


def test_the_predicted_apr_uses_predicted_rates_and_the_current_one_where_a_leg_has_none() -> None:
    s = snap(perp("0.0001", venue="a", predicted="0.0003"), perp("0.0002", venue="b"))
    assert (s.long.venue, s.short.venue) == ("a", "b")
    assert s.predicted_apr == Decimal("-0.1095")  # (0.0002 - 0.0003) x 1095: the spread is expected to flip


def test_costs_lower_the_net_apr_by_exactly_the_formula() -> None:
    long, short = spot(bid="59990", ask="59990.02", fee="0.001"), perp("0.0003", bid="60000", ask="60000.5", fee="0.0005")
    s = snap(long, short)
    slip = TERMS.slippage

    def per_trade(leg: SpreadLeg) -> Decimal:
        assert leg.ask is not None and leg.bid is not None
        mid = (leg.ask + leg.bid) / 2
        return leg.fee + (leg.ask - leg.bid) / 2 / mid + slip

    expected = (2 * (per_trade(long) + per_trade(short)) * 8760 / Decimal(72)).quantize(Q)
    assert s.cost_apr == expected
    assert s.net_apr == Decimal("0.3285") - expected
    wider = snap(long, perp("0.0003", bid="59990", ask="60010.5", fee="0.0005"))
    assert wider.cost_apr is not None and wider.cost_apr > expected and wider.net_apr is not None and wider.net_apr < s.net_apr


def test_a_leg_never_seen_makes_the_snapshot_missing_without_numbers() -> None:
    no_funding = snap(spot(), perp(None))
    assert no_funding.state == "missing" and "sim BTC/USDT:USDT: no funding yet" in no_funding.reason
    assert numbers(no_funding) == [None] * len(NUMBERS)
    no_ticker = snap(SpreadLeg(venue="sim", symbol="BTC/USDT", kind="spot", funding_rate=Decimal(0)), perp("0.0001"))
    assert no_ticker.state == "missing" and "sim BTC/USDT: no ticker yet" in no_ticker.reason
    assert numbers(no_ticker) == [None] * len(NUMBERS)


def test_a_stale_funding_or_ticker_on_either_leg_gates_the_numbers_and_says_which() -> None:
    fresh = snap(spot(), perp("0.0001"), now=T0 + TTL)
    assert fresh.state == "ok"  # exactly the TTL old: still fresh
    old_funding = snap(spot(ts=T0 + TTL), perp("0.0001", book_ts=T0 + TTL), now=T0 + TTL + 1)
    assert old_funding.state == "stale" and old_funding.reason == f"sim BTC/USDT:USDT: funding {TTL + 1} ms old (ttl {TTL} ms)"
    assert numbers(old_funding) == [None] * len(NUMBERS)
    old_perp_book = snap(spot(ts=T0 + TTL), perp("0.0001", ts=T0 + TTL, book_ts=T0), now=T0 + TTL + 1)
    assert old_perp_book.state == "stale" and old_perp_book.reason == f"sim BTC/USDT:USDT: ticker {TTL + 1} ms old (ttl {TTL} ms)"
    old_spot = snap(spot(ts=T0), perp("0.0001", ts=T0 + TTL), now=T0 + TTL + 1)
    assert old_spot.state == "stale" and old_spot.reason == f"sim BTC/USDT: ticker {TTL + 1} ms old (ttl {TTL} ms)"
    assert numbers(old_spot) == [None] * len(NUMBERS)


def test_each_venue_has_its_own_ttl() -> None:
    now = T0 + 60_000  # both legs a minute old
    a, b = perp("0.0001", venue="fast"), perp("0.0002", venue="slow")
    s = snap(a, b, now=now, ttls=(TTL, 120_000))
    assert s.state == "stale" and s.reason.startswith("fast BTC/USDT:USDT") and "slow" not in s.reason
    assert snap(a, b, now=now, ttls=(120_000, 120_000)).state == "ok"


def test_missing_outranks_stale_and_the_reason_names_both() -> None:
    s = snap(spot(ts=T0), perp(None, ts=T0 + TTL), now=T0 + TTL + 1)
    assert s.state == "missing" and "no funding yet" in s.reason and "sim BTC/USDT: ticker" in s.reason


def test_a_pair_without_a_perpetual_is_refused() -> None:
    try:
        snap(spot(venue="a"), spot(venue="b"))
    except ValueError as exc:
        assert "no perpetual" in str(exc)
    else:
        raise AssertionError("two spot legs have no funding to collect")


# ----------------------------------------------------------------------------- properties

rates = st.decimals(min_value=Decimal("-0.05"), max_value=Decimal("0.05"), places=6)
intervals = st.sampled_from([1, 2, 4, 8])
prices = st.decimals(min_value=Decimal(100), max_value=Decimal(100_000), places=2)
fees = st.decimals(min_value=Decimal(0), max_value=Decimal("0.002"), places=5)


@st.composite
def legs(draw: st.DrawFn) -> tuple[SpreadLeg, SpreadLeg]:
    bid = draw(prices)

    def perp_leg(venue: str) -> SpreadLeg:
        spread = draw(st.decimals(min_value=Decimal(0), max_value=Decimal(50), places=2))
        predicted = draw(st.none() | rates)
        return perp(
            str(draw(rates)),
            interval_h=draw(intervals),
            venue=venue,
            bid=str(bid),
            ask=str(bid + spread),
            fee=str(draw(fees)),
            predicted=None if predicted is None else str(predicted),
        )

    first = perp_leg("a")
    if draw(st.booleans()):
        return spot(bid=str(bid), ask=str(bid + Decimal("0.01")), fee=str(draw(fees))), first
    return first, perp_leg("b")


@given(legs=legs(), hold=st.integers(1, 24 * 90), borrow=st.decimals(min_value=Decimal(0), max_value=Decimal("0.001"), places=7))
def test_apr_is_never_negative_net_is_apr_less_costs_and_the_order_of_the_legs_does_not_matter(
    legs: tuple[SpreadLeg, SpreadLeg], hold: int, borrow: Decimal
) -> None:
    terms = TERMS._replace(hold_hours=Decimal(hold), borrow_rate=borrow)
    a, b = legs
    s = snap(a, b, terms=terms)
    assert s.state == "ok"
    assert s.apr is not None and s.cost_apr is not None and s.borrow_apr is not None
    assert s.apr >= 0 and s.cost_apr >= 0 and s.borrow_apr >= 0
    assert s.net_apr == s.apr - s.cost_apr - s.borrow_apr
    assert s.use_margin == (s.short.kind == "spot") and (s.borrow_apr > 0) <= s.use_margin
    assert snap(b, a, terms=terms) == s
