"""The simulated exchange's funding for funding-rate arbitrage: a seeded funding walk per perpetual,
payments with their events, spot that follows its perpetual, a test hook that scripts funding,
and two simulated venues side by side.

Engine level (pure, no NATS) first; then the service on a real nats-server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bus.contract import InputRejected
from schemas import ids, subjects
from schemas.account import Balance, FundingPayment
from schemas.market import FundingRate
from testkit.bus import eventually
from testkit.paper import feed_trade, stored
from tests.test_sim_helpers import HOUR, SPOT, SWAP, T0, D, Sim, make_config, of, one, seeded, spot_market, swap_market
from venues.errors import Transient
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig, SimMarket
from venues.sim.draws import normal
from venues.sim.engine import state_digest
from venues.sim.funding import interval_text
from venues.sim.journal import SetFunding, Tick
from venues.sim.paper import PaperPrints, feed_subjects
from venues.sim.prices import MarketPrices, RandomWalk
from venues.sim.service import SimService
from venues.sim.state import money

EVERY = 5_000  # funding_every_ms by default
ACCOUNTS = {"main": {"USDT": D("10000"), "BTC": D("1")}, "other": {"USDT": D("10000"), "BTC": D("1")}}


def config(seed: int = 1, *, spot: dict[str, Any] | None = None, **swap: Any) -> SimConfig:
    return make_config(seed=seed, test_hooks=True, markets=[swap_market(**swap), spot_market(**(spot or {}))], accounts=ACCOUNTS)


def walk(sim: Sim, steps: int, every: int = EVERY, price: str = "100") -> list[FundingRate]:
    """`steps` ticks `every` ms apart; the FundingRates they published."""
    out: list[FundingRate] = []
    for _ in range(steps):
        out += of(sim.tick(price, ts=sim.ts + every), FundingRate)
    return out


def rates(seed: int, steps: int = 60, **swap: Any) -> list[Decimal]:
    return [f.funding_rate for f in walk(seeded(config(seed, **swap)), steps)]


def pin(sim: Sim, rate: str | None, predicted: str | None = None) -> list[Any]:
    return sim.apply(
        SetFunding(symbol=SWAP, rate=None if rate is None else D(rate), predicted_rate=None if predicted is None else D(predicted))
    )


# ---------------------------------------------------------------------------- the funding walk


def test_the_same_seed_walks_the_same_funding_path_and_another_seed_another() -> None:
    path = rates(1)
    assert path == rates(1)
    assert path != rates(2)
    assert len(set(path)) > 50  # it moves at every step, not once in a while


def test_the_walk_starts_at_its_mean_on_the_first_print() -> None:
    sim = seeded(config(funding_mean=D("0.00025")))
    assert sim.state.markets[SWAP].funding_rate == D("0.00025")


def test_a_step_of_the_walk_is_the_exact_mean_reverting_transition_over_the_time_it_spans() -> None:
    """Steps the clock jumped over (downtime) are one transition over the whole gap, with the
    draw of the step it lands on: the path depends only on the journal's times."""
    mean, vol, rev = 0.0002, 0.001, 2.0
    sim = seeded(config(7, funding_mean=D(repr(mean)), funding_volatility=D(repr(vol)), funding_reversion=D(repr(rev))))
    walk(sim, 1)
    start = float(sim.state.markets[SWAP].funding_rate)
    assert start != mean
    (moved,) = walk(sim, 1, every=3 * EVERY)  # three steps at once
    hours = 3 * EVERY / HOUR
    z, _ = normal(7, SWAP, "funding", moved.ts // EVERY)
    decay = math.exp(-rev * hours)
    expected = mean + (start - mean) * decay + vol * math.sqrt((1 - decay * decay) / (2 * rev)) * z
    assert moved.funding_rate == Decimal(repr(expected)).quantize(D("1e-8"))


def test_the_rate_never_goes_beyond_the_cap() -> None:
    path = rates(3, steps=200, funding_volatility=D(1), funding_cap=D("0.001"))
    assert all(abs(r) <= D("0.001") for r in path)
    assert {D("0.001"), D("-0.001")} <= set(path)  # the walk pushed against both sides


def test_every_funding_rate_carries_the_walks_expectation_one_interval_ahead_as_its_predicted_rate() -> None:
    mean, rev = 0.0001, 0.5
    events = walk(seeded(config(4, funding_reversion=D(repr(rev)), funding_volatility=D("0.001"), funding_interval_h=4)), 20)
    assert events
    for f in events:
        expected = mean + (float(f.funding_rate) - mean) * math.exp(-rev * 4)
        assert f.predicted_rate == Decimal(repr(expected)).quantize(D("1e-8"))
        assert f.predicted_rate != f.funding_rate  # off its mean, the walk expects it to revert


def test_a_funding_rate_is_published_every_funding_step_of_event_time_and_at_each_payment() -> None:
    sim = seeded(config(funding_interval_s=2))  # payments every 2 s, steps every 5 s
    published = []
    for _ in range(60):  # 30 s of ticks 500 ms apart
        published += [f.ts for f in of(sim.tick("100"), FundingRate)]
    expected = [ts for ts in range(T0 + 500, T0 + 30_001, 500) if ts % EVERY == 0 or ts % 2_000 == 0]
    assert published == expected


@pytest.mark.parametrize(
    ("market", "said"),
    [
        ({"funding_interval_s": 10}, "10s"),
        ({"funding_interval_s": 90}, "90s"),
        ({"funding_interval_s": 120}, "2m"),
        ({"funding_interval_h": 1}, "1h"),
        ({"funding_interval_h": 4}, "4h"),
        ({"funding_interval_h": 8}, "8h"),
        ({"funding_interval_h": 24}, "24h"),
        ({"funding_interval_h": 8, "funding_interval_s": 10}, "10s"),  # seconds override hours
    ],
)
def test_the_interval_is_said_in_the_largest_unit_that_divides_it(market: dict[str, Any], said: str) -> None:
    sim = seeded(config(**market))
    event = sim.engine.funding(sim.state, SWAP)
    assert event is not None and event.interval == said
    interval = sim.engine.views.specs[SWAP].funding_interval_ms
    assert interval_text(interval) == said
    assert event.next_funding_time % interval == 0 and T0 < event.next_funding_time <= T0 + interval


# ---------------------------------------------------------------------------- payments


def positioned(rate: str, **swap: Any) -> Sim:
    """`main` long 2, `other` short 2, the rate pinned; funding every 10 s, the clock 1 s before one."""
    sim = seeded(config(funding_interval_s=10, **swap), ts=T0 + 9_000)
    pin(sim, rate)
    sim.place("long", "buy", "2")
    sim.place("short", "sell", "2", account="other")
    return sim


@pytest.mark.parametrize("rate", ["0.0005", "-0.0005"])
def test_longs_pay_shorts_a_positive_rate_and_receive_a_negative_one_and_each_payment_is_its_balance_change(rate: str) -> None:
    sim = positioned(rate)
    before = {a: sim.balance("USDT", a).total for a in ("main", "other")}
    events = sim.tick("110", ts=T0 + 10_000)

    payments = {p.account: p for p in of(events, FundingPayment)}
    notional = D("2") * D("110") * D(rate)
    assert payments["main"].amount == -notional  # the long pays a positive rate
    assert payments["other"].amount == notional
    for account, contracts in (("main", D("2")), ("other", D("-2"))):
        p = payments[account]
        assert sim.balance("USDT", account).total - before[account] == p.amount
        assert (p.contracts, p.funding_rate, p.mark_price, p.funding_time, p.asset) == (contracts, D(rate), D("110"), T0 + 10_000, "USDT")
        assert p.id == ids.funding_payment_id("sim", account, SWAP, T0 + 10_000)
        assert subjects.subject_of(p) == subjects.acct("sim", account, SWAP, "funding")
        balance = next(b for b in of(events, Balance) if b.account == account)
        assert balance.total == sim.balance("USDT", account).total  # its balance event says the same


def test_each_funding_time_is_paid_once_and_flat_accounts_pay_nothing() -> None:
    sim = positioned("0.001")
    sim.place("flat", "sell", "2")  # main closes its long
    events = sim.tick("100", ts=T0 + 10_000)
    assert [p.account for p in of(events, FundingPayment)] == ["other"]
    assert of(sim.tick("100", ts=T0 + 10_500), FundingPayment) == []
    assert [p.funding_time for p in of(sim.tick("100", ts=T0 + 20_000), FundingPayment)] == [T0 + 20_000]


def test_a_payment_is_at_the_rate_last_published_before_it_and_the_walk_moves_after() -> None:
    sim = seeded(config(5, funding_interval_s=10, funding_volatility=D("0.01")), ts=T0 + 4_000)
    sim.place("long", "buy", "1")
    last = of(sim.tick("100", ts=T0 + 5_000), FundingRate)[-1]
    events = sim.tick("100", ts=T0 + 10_000)  # a new step and a funding time at once
    payment = one(events, FundingPayment)
    assert payment.funding_rate == last.funding_rate
    assert payment.amount == money(-D("100") * last.funding_rate)
    after = one(events, FundingRate)
    assert after.funding_rate != last.funding_rate and after.next_funding_time == T0 + 20_000


# ---------------------------------------------------------------------------- scripted funding (test hook)


def test_a_pinned_rate_stops_the_walk_until_it_is_unpinned_and_is_published_at_once() -> None:
    sim = seeded(config(6, funding_volatility=D("0.01")))
    (scripted,) = pin(sim, "0.0007", "0.0004")
    assert (scripted.funding_rate, scripted.predicted_rate, scripted.ts) == (D("0.0007"), D("0.0004"), T0)
    held = walk(sim, 10)
    assert {(f.funding_rate, f.predicted_rate) for f in held} == {(D("0.0007"), D("0.0004"))}
    assert len(held) == 10  # still published every step: a pinned feed is not a stale one

    (unpinned,) = pin(sim, None)
    assert unpinned.funding_rate == D("0.0007") and unpinned.predicted_rate != D("0.0004")
    moved = walk(sim, 10)
    assert moved[0].funding_rate != D("0.0007") and len({f.funding_rate for f in moved}) == 10


def test_a_pinned_rate_without_a_predicted_rate_predicts_itself_and_each_repin_in_the_same_tick_is_a_new_event() -> None:
    sim = seeded(config())
    (first,) = pin(sim, "-0.002")
    assert first.predicted_rate == D("-0.002")
    (second,) = pin(sim, "0.003")
    (third,) = pin(sim, "-0.002")  # back to the first rate within the same tick: a third fact
    assert first.ts == second.ts == third.ts
    assert len({first.id, second.id, third.id}) == 3  # all reach the stream (ids are its dedupe keys)
    assert third.id == ids.funding_set_id("sim", SWAP, sim.seq)  # named by its journal entry


def test_scripted_funding_without_test_hooks_changes_nothing() -> None:
    sim = seeded(make_config(accounts=ACCOUNTS))  # anyone can write the journal: the entry is a no-op
    before = state_digest(sim.state)
    assert pin(sim, "0.002") == []
    assert state_digest(sim.state) == before


@pytest.mark.parametrize(
    ("symbol", "problem"),
    [(SPOT, "not a perpetual"), ("DOGE/USDT:USDT", "not a perpetual"), ("ETH/USDT:USDT", "no price yet")],
)
def test_scripted_funding_of_a_market_without_funding_or_price_is_refused(symbol: str, problem: str) -> None:
    eth = swap_market(symbol="ETH/USDT:USDT")
    sim = seeded(make_config(test_hooks=True, markets=[swap_market(), spot_market(), eth], accounts=ACCOUNTS))
    entry = SetFunding(symbol=symbol, rate=D("0.001"))
    assert problem in (sim.engine.funding_problem(sim.state, entry) or "")
    before = state_digest(sim.state)
    assert sim.apply(entry) == [] and state_digest(sim.state) == before


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"rate": "NaN"}, "rate"),
        ({"rate": "1.5"}, "rate"),
        ({"rate": "0.001", "predicted_rate": "-2"}, "predicted_rate"),
        ({"predicted_rate": "0.001"}, "predicted_rate"),
    ],
)
def test_a_scripted_rate_no_venue_could_pay_is_refused_naming_its_field(fields: dict[str, str], named: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"`{named}`"):
        msgspec.convert({"symbol": SWAP} | fields, SetFunding, strict=False)


# ---------------------------------------------------------------------------- spot follows its perpetual


def test_the_default_spot_market_follows_the_default_perpetual() -> None:
    spot = next(m for m in SimConfig().markets if m.symbol == "BTC/USDT")
    assert spot.follows == "BTC/USDT:USDT"


def band(leader: Decimal, follower: Decimal, spec: SimMarket) -> bool:
    """Within the basis cap, plus the follower's tick rounding."""
    return abs(follower / leader - 1) <= spec.basis_cap + spec.tick_size / leader


def test_a_follower_stays_within_its_basis_band_of_the_leader_over_many_ticks_and_the_leader_walks_as_before() -> None:
    cfg = SimConfig(seed=9)
    prices, alone = MarketPrices(cfg), RandomWalk(cfg)
    spot = next(m for m in cfg.markets if m.symbol == "BTC/USDT")
    last: dict[str, Decimal] = {}
    leader_path, bases = [], set()
    for step in range(1, 5_001):
        prints = {p.symbol: p for p in prices.next_prints(step, last)}
        perp, follower = prints["BTC/USDT:USDT"], prints["BTC/USDT"]
        assert perp == alone.next_print("BTC/USDT:USDT", step, last.get(perp.symbol, D(60000)))  # unchanged path
        assert band(perp.price, follower.price, spot), step
        leader_path.append(perp.price)
        bases.add(round(follower.price / perp.price - 1, 5))
        last.update((p.symbol, p.price) for p in prints.values())
    assert max(leader_path) / min(leader_path) > D("1.01")  # the leader went places; the follower came along
    assert len(bases) > 20  # the basis moves, within its band


def test_a_follower_follows_the_prints_of_a_candle_file(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text("".join(f"{i},{100 + i},{102 + i},{99 + i},{101 + i},5\n" for i in range(10)))
    cfg = SimConfig(prices="csv", csv_path=str(path), history_minutes=3, markets=[swap_market(), spot_market(follows=SWAP)])
    prices, last = MarketPrices(cfg), dict[str, Decimal]()
    for step in range(1, 40):
        perp, spot = prices.next_prints(step, last)
        assert band(perp.price, spot.price, cfg.markets[1])
        last.update({perp.symbol: perp.price, spot.symbol: spot.price})
    history = prices.history(SPOT, T0, 3)
    assert [b.close for b in history] == [b.close for b in prices.history(SWAP, T0, 3)] == [D(101), D(102), D(103)]


def test_a_followers_backfill_is_its_leaders_on_its_own_tick() -> None:
    cfg = SimConfig(seed=3, history_minutes=30)
    prices = MarketPrices(cfg)
    leader, follower = prices.history("BTC/USDT:USDT", T0, 30), prices.history("BTC/USDT", T0, 30)
    assert [(b.open_time, b.open, b.high, b.low, b.close) for b in follower] == [
        (b.open_time, b.open, b.high, b.low, b.close) for b in leader
    ]  # the perpetual's tick (0.1) is a multiple of the spot's (0.01)


def test_a_paper_follower_prints_with_each_of_its_leaders_trades_and_its_own_are_not_read() -> None:
    cfg = SimConfig(
        venue="paper", prices="paper", paper_venue="binanceusdm", paper_from="first", markets=[swap_market(), spot_market(follows=SWAP)]
    )
    assert feed_subjects(cfg) == (subjects.md("binanceusdm", SWAP, "trade"), subjects.md("binanceusdm", SWAP, "gap"))
    judge = PaperPrints(cfg)
    for n in range(1, 200):
        tick = judge.judge(n, feed_trade(n, D(100) + D(n % 7) / 10, T0 + n * 100, symbol=SWAP))
        assert isinstance(tick, Tick) and [p.symbol for p in tick.prints] == [SWAP, SPOT]
        perp, spot = tick.prints
        assert band(perp.price, spot.price, cfg.markets[1]) and spot.volume == D("0.2")
    with pytest.raises(InputRejected, match="follows"):
        judge.judge(500, feed_trade(500, "100", T0 + 30_000, symbol=SPOT))


@pytest.mark.parametrize(
    ("markets", "named"),
    [
        ([swap_market(), spot_market(follows="ETH/USDT:USDT")], "markets.BTC/USDT.follows"),
        ([swap_market(follows=SPOT), spot_market(follows=SWAP)], "markets.BTC/USDT:USDT.follows"),  # a chain
    ],
)
def test_a_follower_of_a_market_not_listed_or_of_a_follower_is_refused_naming_the_field(markets: list[SimMarket], named: str) -> None:
    with pytest.raises(ValueError, match=f"`{named}`"):
        make_config(markets=markets)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("funding_cap", "0"),
        ("funding_mean", "0.01"),  # beyond the cap
        ("funding_volatility", "-0.1"),
        ("funding_reversion", "NaN"),
        ("funding_interval_s", 0),
        ("follows", "BTC/USDT:USDT"),  # itself
        ("basis_cap", "0"),
        ("basis_reversion", "2"),
        ("basis_volatility", "Infinity"),
    ],
)
def test_a_bad_funding_or_basis_setting_names_its_field(field: str, value: Any) -> None:
    market = dict(symbol=SWAP, tick_size="0.1", lot_size="0.001", min_amount="0.001", start_price="100")
    with pytest.raises(msgspec.ValidationError, match=f"`{field}`"):
        msgspec.convert(market | {field: value}, SimMarket, strict=False)


def test_a_funding_step_of_no_time_is_refused_naming_its_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="`funding_every_ms`"):
        msgspec.convert({"funding_every_ms": 0}, SimConfig, strict=False)


# ---------------------------------------------------------------------------- the service (real nats-server)

START = 1_700_000_000_000  # a multiple of every interval below
LOCKSTEP: dict[str, Any] = dict(clock="lockstep", start_time_ms=START, history_minutes=5, seed=5)


async def start(bus: Client, cfg: SimConfig) -> tuple[SimService, asyncio.Event, asyncio.Task[None]]:
    service = SimService(bus, cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await eventually(lambda: service.service is not None, timeout=20, what=f"the simulated exchange {cfg.venue} to register")
    return service, stop, task


@pytest.fixture
async def hooked(bus: Client) -> AsyncIterator[SimService]:
    service, stop, task = await start(bus, SimConfig(test_hooks=True, **(LOCKSTEP | {"markets": [swap_market(funding_interval_s=10)]})))
    yield service
    stop.set()
    await task


async def funding_events(bus: Client, venue: str = "sim", symbol: str = SWAP) -> list[FundingRate]:
    return [f for f in await stored(bus, "MARKET", subjects.md(venue, symbol, "funding")) if isinstance(f, FundingRate)]


async def test_funding_payments_are_published_on_the_accounts_funding_subject_and_are_its_balance_change(
    hooked: SimService, bus: Client
) -> None:
    venue = SimVenue(bus)
    await venue.step(1)
    await venue.set_funding(SWAP, D("0.001"))
    await venue.create_order(OrderRequest(symbol=SWAP, client_order_id="long1", side="buy", order_type="market", amount=D("0.5")))
    before = next(b.total for b in await venue.fetch_balance() if b.asset == "USDT")
    await venue.step(45)  # 22.5 s: two funding times
    after = next(b.total for b in await venue.fetch_balance() if b.asset == "USDT")

    payments = [p for p in await stored(bus, "ACCOUNT", subjects.acct("sim", "main", SWAP, "funding")) if isinstance(p, FundingPayment)]
    assert [p.funding_time % 10_000 for p in payments] == [0, 0]
    assert all(p.amount < 0 and p.contracts == D("0.5") and p.funding_rate == D("0.001") for p in payments)  # a long pays
    assert all(p.amount == money(-D("0.5") * p.mark_price * D("0.001")) for p in payments if p.mark_price is not None)
    assert after - before == sum(p.amount for p in payments)


async def test_scripted_funding_is_published_at_once_and_survives_a_restart_until_unpinned(bus: Client) -> None:
    cfg = SimConfig(test_hooks=True, **LOCKSTEP)
    service, stop, task = await start(bus, cfg)
    venue = SimVenue(bus)
    try:
        await venue.step(2)
        answer = await venue.set_funding(SWAP, D("0.0007"), D("0.0004"))
        assert (answer.funding_rate, answer.predicted_rate) == (D("0.0007"), D("0.0004"))
        assert (await funding_events(bus))[-1] == answer  # already stored: the reply waited for it
    finally:
        stop.set()
        await task

    service, stop, task = await start(bus, cfg)  # rebuilt from its checkpoint and journal
    try:
        assert (await venue.fetch_funding_rate(SWAP)).funding_rate == D("0.0007")
        await venue.step(30)  # 15 s: three steps of the walk
        held = [f for f in await funding_events(bus) if f.ts > answer.ts]
        assert len(held) == 3 and {(f.funding_rate, f.predicted_rate) for f in held} == {(D("0.0007"), D("0.0004"))}
        await venue.set_funding(SWAP, None)
        await venue.step(30)
        assert (await venue.fetch_funding_rate(SWAP)).funding_rate != D("0.0007")
    finally:
        stop.set()
        await task


async def test_scripted_funding_is_refused_without_test_hooks(bus: Client) -> None:
    service, stop, task = await start(bus, SimConfig(**LOCKSTEP))
    venue = SimVenue(bus)
    try:
        await venue.step(1)
        rate = (await venue.fetch_funding_rate(SWAP)).funding_rate
        with pytest.raises(Transient):  # no such endpoint, like hidden_create_order
            await venue.set_funding(SWAP, D("0.002"))
        assert (await venue.fetch_funding_rate(SWAP)).funding_rate == rate
    finally:
        stop.set()
        await task


async def test_a_service_priced_from_a_candle_file_backfills_and_prints_its_follower_beside_its_leader(bus: Client, tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n" + "".join(f"{i},{60000 + i},{60050 + i},{59950 + i},{60010 + i},5\n" for i in range(20))
    )
    service, stop, task = await start(bus, SimConfig(**(LOCKSTEP | {"prices": "csv", "csv_path": str(path)})))
    venue = SimVenue(bus)
    try:
        assert [c.close for c in await venue.fetch_ohlcv("BTC/USDT", limit=3)] == [c.close for c in await venue.fetch_ohlcv(SWAP, limit=3)]
        await venue.step(20)
        perp, spot = service.state.markets["BTC/USDT:USDT"], service.state.markets["BTC/USDT"]
        assert perp.step == spot.step == 20 and band(perp.last, spot.last, SimConfig().markets[2])
    finally:
        stop.set()
        await task


async def test_a_second_simulated_venue_beside_the_first_keeps_its_prices_and_walks_its_own_funding(bus: Client) -> None:
    """`sim2` prints `sim`'s trades (paper prices) and walks its own funding (its own seed), on
    one server: its own journal, durable consumers, checkpoints, micro service and accounts."""
    sim, stop1, task1 = await start(bus, SimConfig(test_hooks=True, **LOCKSTEP))
    second = SimConfig(venue="sim2", seed=6, prices="paper", paper_venue="sim", paper_from="first", test_hooks=True)
    sim2, stop2, task2 = await start(bus, second)
    one_, two = SimVenue(bus), SimVenue(bus, venue="sim2")
    try:
        await one_.step(60)  # 30 s of event time: six steps of each walk
        await eventually(lambda: sim2.state.ts == sim.state.ts, what="sim2 to print every trade of sim")
        for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT"):
            a, b = sim.state.markets[symbol].last, sim2.state.markets[symbol].last
            assert abs(a / b - 1) <= D("0.002"), symbol  # BTC/USDT: each venue's spot follows its own perpetual
        funding1, funding2 = await one_.fetch_funding_rate(SWAP), await two.fetch_funding_rate(SWAP)
        assert funding1.funding_rate != funding2.funding_rate
        assert (funding1.next_funding_time, funding1.interval) == (funding2.next_funding_time, funding2.interval)
        assert len(await funding_events(bus, "sim2")) >= 6

        await two.set_funding(SWAP, D("0.0009"))  # one venue's hooks, journal and orders are its own
        assert (await one_.fetch_funding_rate(SWAP)).funding_rate == funding1.funding_rate
        same = OrderRequest(symbol=SWAP, client_order_id="same1", side="buy", order_type="market", amount=D("0.01"))
        assert (await one_.create_order(same)).status == (await two.create_order(same)).status == "closed"
        assert sim.journal.name != sim2.journal.name and sim.runtime.spec.name != sim2.runtime.spec.name
    finally:
        stop2.set()
        stop1.set()
        await asyncio.gather(task1, task2)
