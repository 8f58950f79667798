"""The funding-arbitrage backtest: the live funding monitor's core, the live arbitrage's core and the
live matching engine over candles (backtest/arbitrage.py). Its scenarios are the live end-to-end
tests' (tests/test_arbitrage_end_to_end.py), with the same expectations: enter long spot / short
perp on a rich funding, collect it, leave when it flips, and stay out without margin; a refused
hedge unwound until the failure budget stops entries; a margin refusal blocking re-entry. And
what only a backtest can show over a long run: the books agree with the wallet after every
candle, the payments follow the data's funding schedule, and no leg is left naked longer than
the saga allows."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backtest.arbitrage import ArbSession, read_funding_csv, run_arbitrage_backtest
from backtest.session import BacktestError
from cli.main import main
from monitors.funding.config import FundingConfig, LegConfig, PairConfig
from schemas.commands import PlaceOrder
from strategies.arbitrage.config import ArbConfig, ArbLeg
from testkit.backtest import candles
from testkit.chaos_arb import naked_spans
from venues.sim.config import SimConfig, SimMarket
from venues.sim.journal import Bar
from venues.sim.state import money

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
H8 = 8 * 3_600_000
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
LOT = D("0.001")  # the perpetual's lot: the coarser of the two


def bars(n: int, seed: int = 1, vol: float = 0.0005, start: float = 60_000.0) -> list[Bar]:
    return candles(n, seed=seed, vol=vol, t0=T0, start=start)


def sim(usdt: str = "50000", funding_h: int = 8, **kw: Any) -> SimConfig:
    return SimConfig(
        markets=[
            SimMarket(
                symbol=PERP,
                tick_size=D("0.1"),
                lot_size=D("0.001"),
                min_amount=D("0.001"),
                start_price=D(60_000),
                tick_volume=D("0.5"),
                funding_mean=D("0.0002"),
                funding_volatility=D(0),
                funding_interval_h=funding_h,
            ),
            SimMarket(
                symbol=SPOT,
                kind="spot",
                tick_size=D("0.01"),
                lot_size=D("0.00001"),
                min_amount=D("0.00001"),
                start_price=D(60_000),
                tick_volume=D("0.5"),
                follows=PERP,
            ),
        ],
        accounts={"arb": {"USDT": D(usdt)}},
        history_minutes=0,
        **kw,
    )


def funding(**kw: Any) -> FundingConfig:
    legs = [LegConfig(venue="sim", symbol=SPOT), LegConfig(venue="sim", symbol=PERP)]
    fields: dict[str, Any] = {"hold_hours": D(720), "pairs": [PairConfig(name="btc", legs=legs)]}
    return FundingConfig(**(fields | kw))


def arb(**kw: Any) -> ArbConfig:
    fields: dict[str, Any] = dict(
        instance="bt",
        pair="btc",
        account="arb",
        amount=D("0.05"),
        entry_apr=D("0.12"),
        entry_hold_ms=30_000,
        exit_apr=D("0.03"),
        legs=[ArbLeg(venue="sim", symbol=SPOT), ArbLeg(venue="sim", symbol=PERP)],
    )
    return ArbConfig(**(fields | kw))


def rates(*per_funding_time: str, every: int = H8) -> dict[str, list[tuple[int, D]]]:
    """The rate each funding time (T0 + 8 h, + 16 h, ...) paid."""
    return {PERP: [(T0 + (k + 1) * every, D(r)) for k, r in enumerate(per_funding_time)]}


class Watch:
    """After every candle: the books against the wallet, and how far apart the legs are."""

    def __init__(self) -> None:
        self.disagreements: list[tuple[int, Any, Any]] = []
        self.candles = 0

    def __call__(self, s: ArbSession) -> None:
        self.candles += 1
        mine = {sym: held - (s.borrow_base if sym == SPOT else 0) for sym, held in s.held().items()}
        # The arbitrage's own legs hold what the wallet holds: its fills, less the interest charged in the coin.
        if mine != s.venue_held() or [b.held for b in s.ast.legs] != [mine[SPOT], mine[PERP]]:
            self.disagreements.append((s.est.ts, mine, s.venue_held()))


def run(
    n: int, data_rates: dict[str, list[tuple[int, D]]] | None, a: ArbConfig | None = None, s: SimConfig | None = None, seed: int = 1
) -> tuple[Any, ArbSession, Watch]:
    watch = Watch()
    result, session = run_arbitrage_backtest(a or arb(), funding(), s or sim(), {PERP: bars(n, seed)}, data_rates, on_candle_end=watch)
    return result, session, watch


def wallet_pnl(s: ArbSession, start_usdt: D) -> D:
    """What the exchange's own wallet says the account made: its USDT, the spot coin it holds and
    the perpetual's unrealized PnL, all at the last prints."""
    acct = s.est.accounts["arb"]
    value = acct.balances.get("USDT", D(0)) - start_usdt + acct.balances.get("BTC", D(0)) * s.price(SPOT)
    pos = acct.positions.get(PERP)
    if pos is not None and pos.contracts:
        value += pos.contracts * (s.price(PERP) - pos.entry_price)
    return value


# ---------------------------------------------------------------------------------------------


def test_a_rich_funding_enters_long_spot_short_perp_collects_it_and_leaves_when_it_flips() -> None:
    # Paid 0.02% at 08:00 and 16:00, then the perpetual's shorts pay: the arbitrage must leave
    # once the flipped rate is quoted (after the 16:00 payment), and stay out without margin.
    result, s, watch = run(24 * 60 + 30, rates("0.0002", "0.0002", "-0.0003", "-0.0003"))
    st = s.ast
    assert (st.entries, st.exits) == (1, 1) and st.saga is None
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    assert [(c.symbol, c.side) for c in places] == [(SPOT, "buy"), (PERP, "sell"), (SPOT, "sell"), (PERP, "buy")]
    entry, leave = places[0].ts, places[2].ts
    assert entry >= T0 + 30_000  # the APR held for entry_hold_ms first
    assert leave == T0 + 2 * H8  # the flipped rate is quoted from the 16:00 funding time on
    # Two payments received on the short perpetual, both at the data's rate and times.
    assert [(p.funding_time, p.funding_rate) for p in s.funding_payments] == [(T0 + H8, D("0.0002")), (T0 + 2 * H8, D("0.0002"))]
    assert all(p.amount > 0 and p.contracts == D("-0.05") for p in s.funding_payments)
    # No margin: the reverse entry is blocked before any order, and alerted once (as live).
    assert st.blocked == "margin_unavailable" and [a.kind for a in s.alerts] == ["arbitrage_margin_unavailable"]
    assert s.venue_held() == {SPOT: 0, PERP: 0}
    assert not watch.disagreements and watch.candles == result.candles
    assert result.strategy == "arbitrage" and len(result.trades) == 4 and {t.symbol for t in result.trades} == {SPOT, PERP}


def test_funding_payments_are_the_engines_at_every_funding_time_of_the_data_and_the_books_agree() -> None:
    # Hourly funding times (a short run), each paying another rate, the last one past the data.
    data = rates(*(["0.0002", "0.0003", "0.00025", "0.0005"] * 2), every=3_600_000)
    result, s, watch = run(8 * 60 + 30, data, s=sim(funding_h=1))
    assert s.ast.entries == 1 and s.ast.exits == 0  # held throughout
    paid = {p.funding_time: p for p in s.funding_payments}
    assert sorted(paid) == [t for t, _ in data[PERP] if t < result.until]  # the real schedule, none missed, none twice
    for t, rate in data[PERP][: len(paid)]:
        p = paid[t]
        assert p.funding_rate == rate and p.mark_price is not None and p.amount == money(D("0.05") * p.mark_price * rate)
    total = sum((p.amount for p in s.funding_payments), D(0))
    assert s.funding == total == s.ast.total.funding  # the session, the arbitrage and the engine
    assert D(str(result.samples[-1].funding)) == total
    assert s.fees == s.ast.total.fees == sum((f.fee_cost for f in s.fills), D(0))
    assert wallet_pnl(s, D(50_000)) == s.pnl()  # open position: marked at the last prints
    assert not watch.disagreements
    assert abs(result.samples[-1].equity - (50_000 + float(s.pnl()))) < 1e-6


def test_no_leg_is_naked_beyond_the_saga_and_the_books_agree_through_many_entries_and_exits() -> None:
    # Hourly funding, rich and then nothing, over and over: in, out (below exit_apr), in again.
    a = arb(entry_hold_ms=5_000)
    result, s, watch = run(14 * 60, rates(*(["0.0004", "0"] * 8), every=3_600_000), a, sim(funding_h=1), seed=7)
    st = s.ast
    assert st.entries >= 6 and st.exits >= 6 and st.blocked is None
    spans = naked_spans(s.fills, LOT)
    assert all(b - a_ <= a.naked_ms for a_, b in spans), spans
    assert not watch.disagreements, watch.disagreements[:3]
    assert wallet_pnl(s, D(50_000)) == s.pnl() and s.venue_held() == {SPOT: 0, PERP: 0}
    assert abs(result.samples[-1].equity - (50_000 + float(s.pnl()))) < 1e-6


def test_a_negative_funding_shorts_spot_on_margin_pays_its_interest_and_the_books_agree() -> None:
    # As live: the perpetual's shorts pay, so long perp and short spot on margin; then nothing to collect.
    result, s, watch = run(
        5 * 60 + 30, rates("-0.0004", "-0.0004", "-0.0004", "0", "0", every=3_600_000), arb(use_margin=True), sim(funding_h=1)
    )
    st = s.ast
    assert (st.entries, st.exits) == (1, 1)
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    assert [(c.symbol, c.side, c.use_margin) for c in places] == [
        (SPOT, "sell", True),
        (PERP, "buy", False),
        (SPOT, "buy", True),
        (PERP, "sell", False),
    ]
    assert [p.amount > 0 for p in s.funding_payments] == [True, True, True]  # received on the long perpetual
    assert len(s.interest) == 3 and s.borrow_base == sum((i.interest for i in s.interest), D(0)) > 0  # charged hourly in BTC
    assert st.total.borrow > 0 and st.total.funding == s.funding
    assert not watch.disagreements and wallet_pnl(s, D(50_000)) == s.pnl()
    # The loan grew by its interest, owed in BTC: the buy-back, rounded up to the lot, repaid it all.
    acct = s.est.accounts["arb"]
    assert acct.borrowed.get("BTC", D(0)) == 0 and 0 < acct.balances["BTC"] < D("0.00001")


def test_after_a_margin_short_the_next_long_spot_position_still_exits() -> None:
    """Found by this backtest: the interest of a margin short is charged in the coin, so the
    account owes a little of it after the buy-back; a next long position's exit that sold what
    its fills bought was refused (insufficient balance) and retried for ever. The spot leg now
    holds what the wallet holds."""
    result, s, _ = run(
        5 * 60, rates("-0.0004", "-0.0004", "0.0004", "0.0004", "0", every=3_600_000), arb(use_margin=True), sim(funding_h=1)
    )
    refused = [o for o in s.est.accounts["arb"].closed.values() if o.status == "rejected"]
    assert not refused and s.ast.exits == 2 and s.venue_held()[PERP] == 0
    # and the debt left nothing unhedged: the long position's perpetual short is the spot bought, lot for lot
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    spot_buy = next(c for c in places[4:] if c.symbol == SPOT and c.side == "buy")
    perp_sell = next(c for c in places[4:] if c.symbol == PERP and c.side == "sell")
    assert perp_sell.amount == spot_buy.amount


def test_a_refused_hedge_is_unwound_and_the_failure_budget_stops_the_next_entries() -> None:
    # As live: 650 USDT buys the spot leg and leaves no margin for the perpetual's short.
    result, s, watch = run(6 * 60, None, arb(amount=D("0.01"), unwinds_per_hour=2), sim(usdt="650"))
    st = s.ast
    assert st.blocked == "failure_budget" and st.entries == 0 and len(st.unwinds) == 2
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    spot_buys = [c for c in places if c.symbol == SPOT and c.side == "buy"]
    assert len(spot_buys) == 2 and len({c.client_order_id for c in places}) == len(places)
    assert {o.reason for o in s.refused if o.symbol == PERP} == {"insufficient_balance"}  # the hedges, as live
    assert s.venue_held() == {SPOT: 0, PERP: 0}  # every spot leg bought was sold back
    assert all(b - a <= arb().naked_ms for a, b in naked_spans(s.fills, LOT))
    assert not watch.disagreements


def test_a_hedge_the_book_cannot_fill_is_tried_again_then_unwound_to_what_both_legs_hold() -> None:
    # The perpetual's book is thin (0.02 BTC within reach): the hedge of 0.05 fills part and its
    # IOC remainder expires; what is missing is tried again every clock step until the naked
    # deadline, then the spot leg is sold back to what the perpetual covers.
    thin = [msgspec.structs.replace(m, book_depth=D("0.01"), book_levels=2) if m.symbol == PERP else m for m in sim().markets]
    _, s, watch = run(30, rates("0.0003"), arb(), msgspec.structs.replace(sim(), markets=thin))
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    said = [(c.symbol, c.side, c.amount) for c in places]
    assert said[:2] == [(SPOT, "buy", D("0.05")), (PERP, "sell", D("0.05"))]
    retries, unwind = said[2:-1], said[-1]
    assert retries and all(r[:2] == (PERP, "sell") and r[2] <= D("0.03") for r in retries), said
    assert [r[2] for r in retries] == sorted((r[2] for r in retries), reverse=True)  # each for what is still missing
    assert places[-2].ts - places[0].ts < arb().naked_ms <= places[-1].ts - places[0].ts and len(s.ast.unwinds) == 1
    held = s.held()
    assert unwind == (SPOT, "sell", D("0.05") - held[SPOT]) and held[SPOT] == -held[PERP] == s.venue_held()[SPOT]
    assert held[SPOT] > D("0.02")  # the tries found more than the first IOC did
    assert not watch.disagreements and wallet_pnl(s, D(50_000)) == s.pnl()


def test_a_margin_refusal_by_the_exchange_blocks_reentry() -> None:
    s_cfg = msgspec.structs.replace(sim(), borrow_limit={"BTC": D(0)})
    result, s, _ = run(3 * 60, rates("-0.0003"), arb(use_margin=True), s_cfg)
    assert s.ast.blocked == "margin_unavailable"
    places = [c for c in s.decided if isinstance(c, PlaceOrder)]
    assert [(c.symbol, c.side, c.use_margin) for c in places] == [(SPOT, "sell", True)]
    assert not s.fills


def test_between_two_prints_the_arbitrage_decides_at_its_own_clock_ticks() -> None:
    # Spreads only on news (publish_ms a minute): the entry's wait ends between two prints (every
    # 15 s), at the arbitrage's clock tick 20 s after the first rich snapshot, as live every 500 ms.
    fund = funding(publish_ms=60_000)
    _, s = run_arbitrage_backtest(arb(entry_hold_ms=20_000), fund, sim(), {PERP: bars(10)}, None)
    assert s.first_ok is not None
    first_ok = s.first_ok.ts
    place = next(c for c in s.decided if isinstance(c, PlaceOrder))
    assert place.ts == first_ok + 20_000 and place.ts % 15_000  # not a print's time
    fills = [f for f in s.fills if f.client_order_id == place.client_order_id]
    assert fills and fills[0].ts == place.ts - place.ts % 15_000  # it trades on the last print's book


def test_the_same_inputs_make_the_same_run() -> None:
    a = run(600, rates("0.0002", "-0.0002"))[1]
    b = run(600, rates("0.0002", "-0.0002"))[1]
    assert a.decided == b.decided and a.fills == b.fills and a.spreads == b.spreads and a.first_ok == b.first_ok and a.ast == b.ast


def test_the_spot_leg_from_its_own_candles() -> None:
    perp = bars(600, seed=3)
    spot = [msgspec.structs.replace(b, open=b.open + 5, high=b.high + 5, low=b.low + 5, close=b.close + 5) for b in perp]
    _, s = run_arbitrage_backtest(arb(), funding(), sim(), {PERP: perp, SPOT: spot}, rates("0.0002"))
    assert s.ast.entries == 1
    spot_fill = next(f for f in s.fills if f.symbol == SPOT)
    perp_fill = next(f for f in s.fills if f.symbol == PERP)
    assert spot_fill.price - perp_fill.price > 4  # the spot leg traded on its own prices, $5 above


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"arb": arb(legs=[ArbLeg(venue="other", symbol=SPOT), ArbLeg(venue="sim", symbol=PERP)])}, "legs[0].venue"),
        ({"arb": arb(account="nobody")}, "account"),
        ({"arb": arb(amount=D("0.0505"))}, "amount"),
        ({"arb": arb(spread_fresh_ms=10_000)}, "spread_fresh_ms"),
        ({"arb": arb(pair="nope")}, "pair"),
        ({"funding": funding(ttl_ms=10_000)}, "funding.ttl_ms"),
        ({"sim": msgspec.structs.replace(sim(), markets=[msgspec.structs.replace(m, follows=None) for m in sim().markets])}, "follows"),
        ({"rates": {PERP: [(T0 + H8, D("0.0001")), (T0 + H8 + 3_600_000, D("0.0001"))]}}, "funding_interval_h"),
        ({"rates": {SPOT: [(T0 + H8, D("0.0001"))]}}, "not a perpetual"),
        ({"candle_ms": 30_000}, "1-minute candles"),
    ],
)
def test_a_bad_setup_names_what_is_wrong(change: dict[str, Any], says: str) -> None:
    kw: dict[str, Any] = {"arb": arb(), "funding": funding(), "sim": sim(), "rates": None, "candle_ms": 60_000} | change
    with pytest.raises(BacktestError, match=says.replace("[", r"\[").replace("]", r"\]")):
        run_arbitrage_backtest(kw["arb"], kw["funding"], kw["sim"], {PERP: bars(10)}, kw["rates"], candle_ms=kw["candle_ms"])


def test_a_funding_file_is_read_and_a_bad_row_names_its_line(tmp_path: Path) -> None:
    good = tmp_path / "rates.csv"
    good.write_text("fundingTime,fundingRate\n1767254400000,0.0001\n2026-01-01T16:00:00Z,-0.00005\n")
    assert read_funding_csv(good) == [(T0 + H8, D("0.0001")), (T0 + 2 * H8, D("-0.00005"))]
    for body, says in (
        ("timestamp,funding_rate\n1767254400000,lots\n", "bad.csv:2"),
        ("timestamp,funding_rate\n1767254400000,0.0001\nyesterday,0.0001\n", "bad.csv:3"),
        ("1767254400000,0.0001\n1767254400000,0.0001\n", "not after"),
        ("1767254400000,2\n", "bad.csv:1"),
        ("1767254400,0.0001\n", "not seconds"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(BacktestError, match=says):
            read_funding_csv(bad)


# ------------------------------------------------------------------ the command line

CONFIG = """
data_dir = "{data}"

[sim]
[sim.accounts.arb]
USDT = "50000"

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
funding_mean = "0.0002"

[[sim.markets]]
symbol = "BTC/USDT"
kind = "spot"
tick_size = "0.01"
lot_size = "0.00001"
min_amount = "0.00001"
start_price = "60000"
follows = "BTC/USDT:USDT"

[funding]
hold_hours = "720"

[[funding.pairs]]
name = "btc"
legs = [{{ venue = "sim", symbol = "BTC/USDT" }}, {{ venue = "sim", symbol = "BTC/USDT:USDT" }}]

[[arbitrages]]
instance = "bt"
pair = "btc"
account = "arb"
amount = "0.05"
entry_apr = "0.12"
entry_hold_ms = 30000
exit_apr = "0.03"
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    config = tmp_path / "sqt.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data"))
    perp = tmp_path / "perp.csv"
    perp.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{b.open_time},{b.open},{b.high},{b.low},{b.close},{b.volume}\n" for b in bars(1_500))
    )
    data = tmp_path / "rates.csv"
    data.write_text("timestamp,funding_rate\n" + "".join(f"{t},{r}\n" for t, r in rates("0.0002", "-0.0003", "-0.0003")[PERP]))
    return config, perp, data


def sqt(config: Path, *args: str) -> int:
    return main(["--config", str(config), "backtest", "arbitrage", *args])


def test_the_command_writes_the_summary_trades_and_report(files: tuple[Path, Path, Path], tmp_path: Path, capsys: Any) -> None:
    config, perp, data = files
    out = tmp_path / "out"
    assert sqt(config, "--data-perp", str(perp), "--funding", str(data), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "1 entries, 1 exits" in printed and "total return" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "arbitrage" and summary["candles"] == 1_500 and summary["fills"] == 4
    assert summary["funding"] > 0 and summary["start_equity"] == 50_000
    assert len((out / "trades.csv").read_text().splitlines()) == 5
    assert (out / "report.html").exists()
    # A constant rate instead of the data: nothing flips, it stays in.
    assert sqt(config, "--data-perp", str(perp), "--out", str(tmp_path / "c"), "--until", "1767240000000") == 0
    assert "1 entries, 0 exits" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "entry_apr=lots"], "--set"),
        (["--set", "colour=red"], "KEY=VALUE"),
        (["--instance", "other"], "other"),
        (["--funding-rate", "5"], "--funding-rate"),
        (["--capital", "0"], "capital"),
        (["--since", "2027-01-01"], "no candles"),
        (["--data-spot", "/nonexistent/spot.csv"], "no such file"),
        (["--funding", "BAD"], "rates.bad:2"),
        (["--data-perp", "FIVE"], "funding.ttl_ms: 30000 ms is shorter than the 75000 ms between two prints"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    files: tuple[Path, Path, Path], tmp_path: Path, capsys: Any, args: list[str], says: str
) -> None:
    config, perp, _ = files
    bad = tmp_path / "rates.bad"
    bad.write_text("timestamp,funding_rate\n1767254400000,much\n")
    five = tmp_path / "five.csv"  # 5-minute candles: a print every 75 s
    five.write_text(
        "timestamp,open,high,low,close,volume\n" + "".join(f"{T0 + i * 300_000},60000,60010,59990,60000,5\n" for i in range(20))
    )
    args = [str(bad) if a == "BAD" else str(five) if a == "FIVE" else a for a in args]
    assert sqt(config, "--data-perp", str(perp), "--out", str(tmp_path / "x"), *args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
