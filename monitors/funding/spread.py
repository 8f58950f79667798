"""The spread and APR of one pair of legs: a pure function of what was last seen of each, and now.

Each leg's funding is annualized over its own real interval (a 1h perpetual pays 8760 times a
year, an 8h one 1095 times), so legs with different intervals compare. The leg with the lower
annualized funding is the one to hold long, the higher the one to hold short: positive funding
on a perpetual against its spot market means long spot, short perpetual; negative means short
spot on margin (paying its borrow interest) and long perpetual; two perpetuals are held long on
the lower. A spot leg's funding is zero.

The cost of the position is what entering and leaving take (two trades per leg, each paying
the leg's taker fee, half its quoted spread, and `slippage` beyond it), spread over the holding
horizon into an APR, plus the borrow interest of a margin short. A snapshot carries numbers only
when both legs are there and fresh: `missing` when a leg was never seen (no ticker, or a
perpetual without funding), `stale` when its funding or its ticker is older than its TTL.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from schemas import ids
from schemas.ops import FundingSpread, SpreadLeg, SpreadState

YEAR_MS = 365 * 24 * 3600 * 1000
HOURS_PER_YEAR = 8760
APR_QUANTUM = Decimal("1e-8")
ZERO = Decimal(0)
TRADES_PER_LEG = 2  # in and out


class Terms(NamedTuple):
    """What the config says about a pair's costs."""

    hold_hours: Decimal
    slippage: Decimal
    borrow_rate: Decimal  # hourly
    margin: bool  # whether its spot leg may be shorted on margin


def apr_of(rate: Decimal, interval_ms: int) -> Decimal:
    """A per-interval rate over a year of such intervals (0 for a leg without funding)."""
    if not interval_ms:
        return ZERO
    return rate * YEAR_MS / interval_ms


def quantized(value: Decimal) -> Decimal:
    return value.quantize(APR_QUANTUM, rounding=ROUND_HALF_EVEN)


def funding_of(leg: SpreadLeg) -> Decimal:
    return leg.funding_rate if leg.kind == "swap" and leg.funding_rate is not None else ZERO


def predicted_of(leg: SpreadLeg) -> Decimal:
    if leg.kind != "swap":
        return ZERO
    return leg.predicted_rate if leg.predicted_rate is not None else funding_of(leg)


def half_spread(leg: SpreadLeg) -> Decimal:
    """Half the quoted spread relative to the mid: what crossing the book costs at the touch."""
    assert leg.bid is not None and leg.ask is not None
    return (leg.ask - leg.bid) / (leg.ask + leg.bid)


def trade_cost(leg: SpreadLeg, slippage: Decimal) -> Decimal:
    """One taker trade on the leg, as a fraction of its notional."""
    return leg.fee + half_spread(leg) + slippage


def cost_apr(long: SpreadLeg, short: SpreadLeg, terms: Terms) -> Decimal:
    per_position = TRADES_PER_LEG * (trade_cost(long, terms.slippage) + trade_cost(short, terms.slippage))
    return quantized(per_position * HOURS_PER_YEAR / terms.hold_hours)


def direction(legs: tuple[SpreadLeg, SpreadLeg]) -> tuple[SpreadLeg, SpreadLeg]:
    """(long, short): long the lower annualized funding. Ties go long spot (no borrowing), then
    by venue and symbol, so the configured order of the legs never changes the answer."""

    def key(leg: SpreadLeg) -> tuple[Decimal, bool, str, str]:
        return (apr_of(funding_of(leg), leg.interval_ms), leg.kind == "swap", leg.venue, leg.symbol)

    a, b = legs
    return (a, b) if key(a) <= key(b) else (b, a)


def name(leg: SpreadLeg) -> str:
    return f"{leg.venue} {leg.symbol}"


def judge(legs: tuple[SpreadLeg, SpreadLeg], ttls: tuple[int, int], now: int) -> tuple[SpreadState, str]:
    """Whether both legs are there and fresh, and if not, which and why."""
    missing: list[str] = []
    stale: list[str] = []
    for leg, ttl in zip(legs, ttls):
        if leg.kind == "swap":
            if not leg.funding_ts:
                missing.append(f"{name(leg)}: no funding yet")
            elif now - leg.funding_ts > ttl:
                stale.append(f"{name(leg)}: funding {now - leg.funding_ts} ms old (ttl {ttl} ms)")
        if not leg.book_ts or leg.bid is None or leg.ask is None:
            missing.append(f"{name(leg)}: no ticker yet")
        elif now - leg.book_ts > ttl:
            stale.append(f"{name(leg)}: ticker {now - leg.book_ts} ms old (ttl {ttl} ms)")
    if missing:
        return "missing", "; ".join(missing + stale)
    if stale:
        return "stale", "; ".join(stale)
    return "ok", ""


def snapshot(monitor: str, pair: str, legs: tuple[SpreadLeg, SpreadLeg], ttls: tuple[int, int], terms: Terms, now: int) -> FundingSpread:
    """The pair's snapshot at `now`. `legs` in the configured order (it decides only which
    perpetual names the snapshot's subject: the first)."""
    perpetuals = [leg for leg in legs if leg.kind == "swap"]
    if not perpetuals:
        raise ValueError(f"funding pair {pair!r} has no perpetual leg: there is no funding to collect")
    state, reason = judge(legs, ttls, now)
    long, short = direction(legs)
    use_margin = short.kind == "spot"
    fields: dict[str, Any] = dict(
        monitor=monitor,
        pair=pair,
        symbol=perpetuals[0].symbol,
        state=state,
        reason=reason,
        long=long,
        short=short,
        use_margin=use_margin,
        next_funding_time=min((leg.next_funding_time for leg in perpetuals if leg.next_funding_time), default=0),
        ts=now,
    )
    if state == "ok":
        long_apr, short_apr = apr_of(funding_of(long), long.interval_ms), apr_of(funding_of(short), short.interval_ms)
        apr = quantized(short_apr - long_apr)
        costs = cost_apr(long, short, terms)
        borrow = quantized(terms.borrow_rate * HOURS_PER_YEAR) if use_margin else ZERO
        predicted = apr_of(predicted_of(short), short.interval_ms) - apr_of(predicted_of(long), long.interval_ms)
        fields.update(
            spread=funding_of(short) - funding_of(long),
            apr=apr,
            predicted_apr=quantized(predicted),
            cost_apr=costs,
            borrow_apr=borrow,
            net_apr=apr - costs - borrow,
        )
        if use_margin and not terms.margin:
            fields["reason"] = f"margin_unavailable: holding {name(short)} short needs margin, which pair {pair} has off"
    return FundingSpread(id=ids.content_id(f"funding:{monitor}:{pair}", fields), **fields)
