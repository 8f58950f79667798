"""The funding monitor: its config, its core (what it publishes when, what it refuses), and the
monitor itself on a real nats-server: snapshots from market events, a silent leg going stale,
a restart from its checkpoint, and a replay of its input stream that publishes the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from prometheus_client import generate_latest

from bus import checkpoints
from bus.contract import Outgoing, fold_stream
from bus.embedded import EmbeddedServer
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.runtime import ConsumerRuntime
from bus.settings import BusSettings
from monitors.funding.config import FundingConfig, LegConfig, PairConfig
from monitors.funding.core import FundingCore, interval_ms
from monitors.funding.metrics import FundingMetrics
from monitors.funding.runner import FundingConfigError, build_funding, clock_event, funding_spec, input_stream, market_rules, run_funding
from monitors.funding.state import FundingState
from monitors.funding.testing import HOUR_MS, PERP, SPOT, T0, FundingDriver, book, funding, perp_perp, sim_markets, spot_perp
from schemas import subjects
from schemas.codec import decode
from schemas.ops import FundingSpread
from testkit.bus import eventually
from testkit.processes import Components
from venues.sim.config import SimConfig
from venues.sim.service import SimService

SUBJECT = subjects.funding_spread(PERP)


def live(**kw: Any) -> FundingDriver:
    """Both legs of the spot-perp pair seen at T0, fresh."""
    d = FundingDriver(FundingConfig(pairs=[spot_perp()], **kw))
    d.feed(book("60000", "60000.01", T0, symbol=SPOT))
    d.feed(book("60000", "60000.1", T0))
    d.feed(funding("0.0001", T0))
    return d


# ----------------------------------------------------------------------------- the config


def test_a_config_reads_from_toml_shaped_data_and_each_bad_value_names_its_key() -> None:
    data: dict[str, Any] = {
        "ttl_ms_by_venue": {"sim2": 120_000},
        "pairs": [{"name": "btc", "legs": [{"venue": "sim", "symbol": SPOT}, {"venue": "sim", "symbol": PERP}], "borrow_rate": "0.00002"}],
    }
    cfg = msgspec.convert(data, FundingConfig, strict=False)
    assert cfg.pair("btc").borrow_rate == Decimal("0.00002") and cfg.ttl("sim2") == 120_000 and cfg.ttl("sim") == 30_000
    assert cfg.legs() == [("sim", SPOT), ("sim", PERP)]
    bad = {
        "pairs[0].legs` must name exactly two": {"pairs": [{"name": "x", "legs": [{"venue": "sim", "symbol": PERP}]}]},
        "names sim BTC/USDT:USDT twice": {"pairs": [{"name": "x", "legs": [{"venue": "sim", "symbol": PERP}] * 2}]},
        "pairs[0].legs[1].symbol": {
            "pairs": [{"name": "x", "legs": [{"venue": "sim", "symbol": PERP}, {"venue": "sim", "symbol": "BTCUSDT"}]}]
        },
        "pairs[1].name` 'x' is used": {"pairs": [spot_perp_data("x"), spot_perp_data("x")]},
        "funding.hold_hours": {"hold_hours": "0"},
        "funding.slippage": {"slippage": "-0.1"},
        "funding.ttl_ms_by_venue.sim": {"ttl_ms_by_venue": {"sim": 0}},
        "funding.publish_ms": {"publish_ms": 0},
        "borrow_rate": {"pairs": [dict(spot_perp_data("x"), borrow_rate="NaN")]},
        "leverage": {"leverage": 3},
    }
    for needle, doc in bad.items():
        with pytest.raises(msgspec.ValidationError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            msgspec.convert(doc, FundingConfig, strict=False)


def spot_perp_data(name: str) -> dict[str, Any]:
    return {"name": name, "legs": [{"venue": "sim", "symbol": SPOT}, {"venue": "sim", "symbol": PERP}]}


def test_asking_for_a_pair_that_is_not_configured_names_the_pairs_there_are() -> None:
    cfg = FundingConfig(pairs=[spot_perp("btc"), perp_perp("btc-x")])
    with pytest.raises(KeyError, match="'eth'.*known: btc, btc-x") as raised:
        cfg.pair("eth")
    assert str(raised.value) == "no funding pair 'eth' (known: btc, btc-x)"


def test_a_pair_without_a_perpetual_or_a_leg_without_market_rules_is_refused_by_the_core() -> None:
    spot_only = PairConfig(name="s", legs=[LegConfig(venue="sim", symbol=SPOT), LegConfig(venue="sim2", symbol=SPOT)])
    with pytest.raises(ValueError, match="'s' has no perpetual"):
        FundingCore(FundingConfig(pairs=[spot_only]), sim_markets("sim", "sim2"))
    with pytest.raises(ValueError, match=r"no market rules for other\|BTC/USDT:USDT"):
        FundingCore(FundingConfig(pairs=[perp_perp(venues=("sim", "other"))]), sim_markets("sim"))


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("1h", HOUR_MS),
        ("4h", 4 * HOUR_MS),
        ("8h", 8 * HOUR_MS),
        ("24h", 24 * HOUR_MS),
        ("1d", 24 * HOUR_MS),
        ("90000ms", 90_000),
    ],
)
def test_a_funding_interval_is_read_as_a_duration(text: str, ms: int) -> None:
    assert interval_ms(text) == ms


# ----------------------------------------------------------------------------- the core


def test_a_funding_event_publishes_the_pairs_snapshot_at_once_and_a_ticker_only_after_publish_ms() -> None:
    d = FundingDriver(FundingConfig(pairs=[spot_perp()], publish_ms=1_000))
    [first] = d.feed(book("60000", "60000.01", T0, symbol=SPOT))
    assert first.state == "missing" and "no funding yet" in first.reason and "sim BTC/USDT:USDT: no ticker yet" in first.reason
    assert d.feed(book("60000", "60000.1", T0 + 10)) == []  # not due, still missing
    [ok] = d.feed(funding("0.0001", T0 + 20))
    assert (ok.state, ok.apr, ok.ts, ok.symbol) == ("ok", Decimal("0.1095"), T0 + 20, PERP)
    assert d.feed(funding("0.0001", T0 + 30)) != []  # every funding is news
    assert d.feed(book("60000", "60000.1", T0 + 500)) == []
    assert d.at(T0 + 1_029) == []
    [due] = d.at(T0 + 1_030)
    assert due.state == "ok" and due.ts == T0 + 1_030
    assert len({s.id for s in d.out}) == len(d.out)  # every snapshot its own id


def test_a_leg_going_silent_publishes_a_stale_snapshot_as_soon_as_the_clock_passes_its_ttl() -> None:
    d = live(ttl_ms=5_000, publish_ms=3_600_000)  # the cadence never fires: only the change does
    assert d.last().state == "ok"
    assert d.at(T0 + 5_000) == []
    [stale] = d.at(T0 + 5_001)
    assert stale.state == "stale" and stale.apr is None and stale.net_apr is None
    assert "sim BTC/USDT: ticker 5001 ms old" in stale.reason and "funding 5001 ms old" in stale.reason
    assert d.at(T0 + 6_000) == []  # still stale: nothing new
    d.feed(book("60000", "60000.01", T0 + 6_000, symbol=SPOT))
    d.feed(book("60000", "60000.1", T0 + 6_000))
    [back] = d.feed(funding("0.0002", T0 + 6_000))
    assert back.state == "ok" and back.apr == Decimal("0.219")


def test_each_venue_of_a_perp_perp_pair_is_judged_by_its_own_ttl() -> None:
    cfg = FundingConfig(pairs=[perp_perp()], ttl_ms=5_000, ttl_ms_by_venue={"sim2": 60_000}, publish_ms=3_600_000)
    d = FundingDriver(cfg)
    for venue, rate in (("sim", "0.0003"), ("sim2", "0.0001")):
        d.feed(book("60000", "60000.1", T0, venue=venue))
        d.feed(funding(rate, T0, venue=venue))
    snap = d.last("btc-x")
    assert (snap.state, snap.long.venue, snap.short.venue, snap.apr) == ("ok", "sim2", "sim", Decimal("0.219"))
    [stale] = d.at(T0 + 5_001)
    assert stale.state == "stale" and stale.reason.startswith("sim BTC/USDT:USDT") and "sim2" not in stale.reason


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (funding("0.0001", T0, interval="-1h"), "not a duration"),
        (funding("0.0001", T0, interval="0h"), "outside 1s..7d"),
        (funding("0.0001", T0, interval="8 hours"), "not a duration"),
        (funding("0.5", T0), "beyond any venue's cap"),
        (funding("0.0001", T0, predicted="-0.06"), "`predicted_rate` -0.06"),
        (funding("0.0001", T0, next_funding_time=-1), "next_funding_time"),
        (funding("0.0001", T0, next_funding_time=T0 + 30 * 24 * HOUR_MS), "next_funding_time"),
        (funding("0.0001", T0, symbol=SPOT), "spot market, which pays no funding"),
        (book("60001", "60000", T0), "crossed book"),
        (book("0.01", "0.02", T0), "below one tick"),
        (book("6000", "6000.01", T0 + 1, symbol=SPOT), "away from the last price"),  # a tenth of it a moment later
    ],
)
def test_insane_market_data_is_refused_with_its_reason_and_changes_nothing(event: Any, why: str) -> None:
    d = live()
    before = d.state
    assert d.feed(event) == []
    assert d.state == before
    assert len(d.refused) == 1 and why in d.refused[0], d.refused


def test_a_spot_markets_zero_funding_an_older_event_and_other_markets_change_nothing() -> None:
    d = live()
    before = d.state
    assert d.feed(funding("0", T0, symbol=SPOT)) == []
    assert d.feed(funding("0.0009", T0 - 1)) == []  # older than the one we have
    assert d.feed(book("3000", "3000.01", T0 + 50, symbol="ETH/USDT:USDT")) == []
    assert d.feed(funding("0.0009", T0 + 50, venue="other")) == []
    assert (d.state.legs, d.state.snapshots, d.state.now) == (before.legs, before.snapshots, before.now) and d.refused == []


def test_a_one_sided_book_prices_no_trade_and_leaves_the_leg_as_fresh_as_its_last_full_one() -> None:
    d = live(ttl_ms=5_000, publish_ms=3_600_000)
    one_sided = book("60000", "60000.1", T0 + 4_000)
    d.feed(msgspec.structs.replace(one_sided, ask=None))
    assert d.state.legs[f"sim|{PERP}"].book_ts == T0
    d.feed(book("60000", "60000.01", T0 + 5_001, symbol=SPOT))
    d.feed(funding("0.0001", T0 + 5_001))
    assert d.last().state == "stale" and d.last().reason == "sim BTC/USDT:USDT: ticker 5001 ms old (ttl 5000 ms)"


def test_the_state_survives_a_checkpoint_round_trip() -> None:
    d = live()
    data = msgspec.json.encode(d.state)
    assert msgspec.json.decode(data, type=FundingState) == d.state


def test_the_metrics_show_each_legs_funding_and_staleness_and_each_pairs_apr_with_bounded_labels() -> None:
    d = live()
    d.at(T0 + 2_000)
    text = generate_latest(FundingMetrics(d.core, lambda: d.state).registry).decode()
    assert 'sqt_funding_rate{symbol="BTC/USDT:USDT",venue="sim"} 0.0001' in text
    assert 'sqt_funding_interval_seconds{symbol="BTC/USDT:USDT",venue="sim"} 28800.0' in text
    assert 'sqt_funding_staleness_seconds{feed="ticker",symbol="BTC/USDT",venue="sim"} 2.0' in text
    assert 'sqt_funding_staleness_seconds{feed="funding",symbol="BTC/USDT:USDT",venue="sim"} 2.0' in text
    assert 'feed="funding",symbol="BTC/USDT"' not in text  # a spot leg has no funding feed
    labels = 'long_venue="sim",pair="btc",short_venue="sim",symbol="BTC/USDT:USDT"'
    assert f"sqt_funding_spread_apr{{{labels}}} 0.1095" in text
    assert f"sqt_funding_spread_net_apr{{{labels}}}" in text
    assert 'sqt_funding_spread_state{pair="btc"} 0.0' in text


# ----------------------------------------------------------------------------- on a real server

CFG = FundingConfig(instance="t", pairs=[spot_perp()], ttl_ms=5_000, publish_ms=60_000)


async def stored_snapshots(nc: Client) -> list[FundingSpread]:
    out: list[FundingSpread] = []
    if (await nc.jetstream().stream_info("OPS")).state.last_seq == 0:
        return out
    async for batch in read_stream(nc, "OPS", subjects=(SUBJECT,)):
        out += [decode(m.data) for m in batch]
    return out


async def last_seq(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.last_seq)


class Feeder:
    """Publishes inputs one at a time, each stored in the monitor's input stream before the next
    (the stream sources MARKET and OPS separately: otherwise a clock could overtake a ticker)."""

    def __init__(self, nc: Client, publisher: Publisher, cfg: FundingConfig) -> None:
        self.nc, self.publisher, self.stream = nc, publisher, input_stream(cfg).name

    async def send(self, *events: Any) -> None:
        for event in events:
            before = await last_seq(self.nc, self.stream)
            await self.publisher.publish(event)
            await eventually(lambda seq=before: _past(self.nc, self.stream, seq), what=f"{type(event).__name__} in {self.stream}")


async def _past(nc: Client, stream: str, seq: int) -> bool:
    return await last_seq(nc, stream) > seq


@contextlib.asynccontextmanager
async def running(nc: Client, cfg: FundingConfig) -> AsyncIterator[ConsumerRuntime[FundingState, Any]]:
    stop = asyncio.Event()
    runtime = await build_funding(nc, cfg, sim_markets())
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.caught_up.wait(), 30)
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        if runtime.publisher is not None:
            await runtime.publisher.close()


def fresh(ts: int, rate: str = "0.0001") -> list[Any]:
    return [book("60000", "60000.01", ts, symbol=SPOT), book("60000", "60000.1", ts), funding(rate, ts)]


async def folded(nc: Client, cfg: FundingConfig) -> tuple[FundingState, list[FundingSpread]]:
    """A fresh core over the whole input stream: its state, and every snapshot it would publish."""
    core = FundingCore(cfg, sim_markets())
    out: list[FundingSpread] = []

    def collect(_m: Any, _state: Any, outputs: list[Outgoing], _reason: str) -> None:
        out.extend(o.message for o in outputs)

    batches = read_stream(nc, input_stream(cfg).name)
    state, _last, _count = await fold_stream(core, core.initial_state(), batches, funding_spec(cfg).rules(), on_step=collect)
    return state, out


async def test_snapshots_go_out_on_their_subject_and_a_restart_from_the_checkpoint_continues_where_it_stopped(bus: Client) -> None:
    publisher = await Publisher(bus).start()
    feed = Feeder(bus, publisher, CFG)
    try:
        async with running(bus, CFG) as first:
            await feed.send(*fresh(T0))
            await eventually(lambda: first.state.snapshots.get("btc") and first.state.snapshots["btc"].state == "ok", what="an ok snapshot")
            await feed.send(clock_event(CFG.instance, T0 + 5_001))
            await eventually(lambda: first.state.snapshots["btc"].state == "stale", what="a stale snapshot")
        stored = await stored_snapshots(bus)
        assert [s.state for s in stored] == ["missing", "ok", "stale"]
        assert stored[1].apr == Decimal("0.1095") and stored[2].reason.endswith("ms old (ttl 5000 ms)")
        cp = await checkpoints.load(bus, "funding-t", FundingState)
        assert cp is not None and cp.seq == await last_seq(bus, input_stream(CFG).name) and cp.state == first.state

        await feed.send(*fresh(T0 + 6_000, rate="-0.0002"))  # while it is down
        async with running(bus, CFG) as second:
            await eventually(lambda: second.state.snapshots["btc"].ts == T0 + 6_000, what="the restarted monitor to catch up")
            assert second.stats.replayed == 0  # it started from the checkpoint, not from the log
            await feed.send(clock_event(CFG.instance, T0 + 6_500))
            await eventually(lambda: second.seq == first.seq + 4, what="the clock after the restart")
        after = await stored_snapshots(bus)
        assert after[: len(stored)] == stored
        assert [s.state for s in after[len(stored) :]] == ["ok"]  # back once its funding is fresh again
        assert after[-1].use_margin is True and after[-1].long.symbol == PERP and after[-1].apr == Decimal("0.219")
        state, replayed = await folded(bus, CFG)
        assert state == second.state  # the same as one run that never stopped
        assert replayed == after
    finally:
        await publisher.close()


async def test_a_replay_of_the_input_stream_publishes_exactly_the_recorded_snapshots(bus: Client) -> None:
    cfg = FundingConfig(instance="r", pairs=[spot_perp()], ttl_ms=2_000, publish_ms=1_000)
    publisher = await Publisher(bus).start()
    feed = Feeder(bus, publisher, cfg)
    try:
        async with running(bus, cfg) as runtime:
            ts = T0
            for i in range(12):  # fresh data, gaps, rates flipping sign
                ts += 700 * (1 + i % 4)
                if i % 3 != 2:
                    await feed.send(book("60000", "60000.1", ts))
                if i % 4 == 0:
                    await feed.send(book("60000", "60000.01", ts, symbol=SPOT))
                await feed.send(funding("0.0001" if i % 2 else "-0.00005", ts), clock_event(cfg.instance, ts + 500))
            last = await last_seq(bus, input_stream(cfg).name)
            await eventually(lambda: runtime.seq == last, what="every input handled")
        recorded = [s for s in await stored_snapshots(bus) if s.monitor == "r"]
        assert {s.state for s in recorded} == {"missing", "ok", "stale"}
        state, replayed = await folded(bus, cfg)
        assert replayed == recorded
        assert state == runtime.state
    finally:
        await publisher.close()


async def test_run_funding_asks_the_venue_for_its_rules_and_judges_silence_by_its_own_clock(
    bus: Client, nats_server: EmbeddedServer
) -> None:
    stop = asyncio.Event()
    now = int(time.time() * 1000)
    sim = SimService(bus, SimConfig(clock="lockstep", start_time_ms=now - 1_000, history_minutes=1))  # answers, prints nothing
    sim_task = asyncio.create_task(sim.run(stop))
    cfg = FundingConfig(instance="live", pairs=[spot_perp()], ttl_ms=1_000, clock_ms=100, publish_ms=60_000)
    monitor = asyncio.create_task(run_funding(BusSettings(nats_url=nats_server.url), cfg, stop))
    publisher = await Publisher(bus).start()
    try:
        await eventually(lambda: _has_stream(bus, input_stream(cfg).name), timeout=30, what="the monitor's input stream")
        await eventually(lambda: _status(bus, "live"), timeout=30, what="the monitor's status endpoint")

        async def states() -> list[str]:
            return [s.state for s in await stored_snapshots(bus) if s.monitor == "live"]

        now = int(time.time() * 1000)
        for event in fresh(now):
            await publisher.publish(event)
        await eventually(lambda: _has(states(), "ok"), timeout=20, what="an ok snapshot")
        await eventually(lambda: _has(states(), "stale"), timeout=20, what="the clock to find the silent legs stale")
        status = await _status(bus, "live")
        assert status is not None and status["pairs"]["btc"]["state"] == "stale" and status["dead_lettered"] == 0
        # The consumer's progress, as every component's /status says it.
        assert status["input_seq"] >= len(fresh(now)) and status["sessions"] == 1 and status["last_error"] == ""
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(monitor, sim_task), 30)
        await publisher.close()


async def test_a_leg_the_venue_does_not_list_stops_the_monitor_naming_the_pair_and_leg(bus: Client, nats_server: EmbeddedServer) -> None:
    stop = asyncio.Event()
    sim = SimService(bus, SimConfig(clock="lockstep", start_time_ms=int(time.time() * 1000), history_minutes=1))
    sim_task = asyncio.create_task(sim.run(stop))
    cfg = FundingConfig(
        pairs=[PairConfig(name="doge", legs=[LegConfig(venue="sim", symbol="DOGE/USDT"), LegConfig(venue="sim", symbol=PERP)])]
    )
    try:
        with pytest.raises(FundingConfigError, match="funding pair 'doge', leg 1: sim has no market DOGE/USDT"):
            await asyncio.wait_for(market_rules(bus, cfg, BusSettings(nats_url=nats_server.url), stop), 30)
        with pytest.raises(FundingConfigError, match="funding.pairs is empty"):
            await market_rules(bus, FundingConfig(), BusSettings(nats_url=nats_server.url), stop)
    finally:
        stop.set()
        await asyncio.wait_for(sim_task, 30)


async def _has_stream(nc: Client, name: str) -> bool:
    try:
        await nc.jetstream().stream_info(name)
    except Exception:  # noqa: BLE001 - not created yet
        return False
    return True


async def _status(nc: Client, instance: str) -> dict[str, Any] | None:
    try:
        reply = await nc.request(subjects.status("funding", instance), b"", timeout=0.5)
    except Exception:  # noqa: BLE001 - not registered yet
        return None
    result: dict[str, Any] = json.loads(reply.data)
    return result


async def _has(got: Any, state: str) -> bool:
    return state in await got


E2E_CONFIG = """
data_dir = "{data}"
[nats]
url = "{url}"
[sim]
tick_ms = 100
history_minutes = 1
[funding]
instance = "e2e"
clock_ms = 200
[[funding.pairs]]
name = "btc"
legs = [{{venue = "sim", symbol = "BTC/USDT"}}, {{venue = "sim", symbol = "BTC/USDT:USDT"}}]
"""


@pytest.mark.e2e
async def test_sqt_run_funding_beside_the_simulated_exchange_publishes_ok_snapshots_from_its_real_feed(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    procs = Components(tmp_path)
    procs.config.write_text(E2E_CONFIG.format(data=tmp_path / "data", url=nats_server.url))
    procs.start("sim", "funding")
    try:

        async def ok() -> list[FundingSpread]:
            return [s for s in await stored_snapshots(bus) if s.state == "ok"]

        await eventually(ok, timeout=60, interval=0.2, what="an ok snapshot from the simulated exchange's own funding and books")
        snap = (await ok())[0]
        perp = snap.short if snap.short.kind == "swap" else snap.long
        assert perp.interval_ms == 8 * HOUR_MS and perp.next_funding_time > snap.ts and perp.fee > 0
        assert snap.apr is not None and snap.cost_apr is not None and snap.borrow_apr is not None
        assert snap.net_apr == snap.apr - snap.cost_apr - snap.borrow_apr
        assert (await bus.jetstream().stream_info("DLQ")).state.messages == 0  # every event of the feed admitted
    finally:
        procs.stop()
