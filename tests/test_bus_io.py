"""Publishing with dedupe ids, bulk reads of stream ranges, and stream provisioning."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import nats
import pytest
from nats.aio.client import Client

from bus import streams
from bus.connection import RECONNECT_MAX_S, connect, reconnect_delay
from bus.embedded import EmbeddedServer
from bus.publisher import Publisher, PublishError
from bus.reader import read_stream
from testkit.bus import eventually
from testkit.events import ticker


async def test_a_republished_message_is_stored_once(bus: Client) -> None:
    pub = await Publisher(bus).start()
    first = await pub.publish(ticker("100", ts=1))
    again = await pub.publish(ticker("100", ts=1))
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert (await bus.jetstream().stream_info("MARKET")).state.messages == 1
    assert pub.duplicates == 1


async def test_publishing_where_no_stream_listens_fails_clearly(nc: Client) -> None:
    pub = await Publisher(nc).start()
    with pytest.raises(PublishError, match="no stream"):
        await pub.publish(ticker())


async def test_publish_all_is_pipelined_and_complete(bus: Client) -> None:
    pub = await Publisher(bus, max_in_flight=100).start()
    acks = await pub.publish_all(ticker(str(100 + i % 5), ts=i) for i in range(2_000))
    assert [a.seq for a in acks] == list(range(1, 2_001))


async def _seed(bus: Client, n: int) -> None:
    pub = await Publisher(bus).start()
    await pub.publish_all(ticker("100", ts=i, symbol="BTC/USDT" if i % 2 else "ETH/USDT") for i in range(1, n + 1))


async def collect(*args, **kw) -> list:
    out = []
    async for batch in read_stream(*args, **kw):
        out += batch
    return out


async def test_reader_reads_exact_ranges_with_filters(bus: Client) -> None:
    await _seed(bus, 5_000)
    everything = await collect(bus, "MARKET")
    assert [m.seq for m in everything] == list(range(1, 5_001))
    window = await collect(bus, "MARKET", start_seq=1_001, end_seq=1_010)
    assert [m.seq for m in window] == list(range(1_001, 1_011))
    btc = await collect(bus, "MARKET", subjects=("md.sim.BTC-USDT.ticker",), end_seq=100)
    assert [m.seq for m in btc] == list(range(1, 100, 2))
    assert json.loads(btc[0].data)["symbol"] == "BTC/USDT"
    assert btc[0].header("Nats-Msg-Id") == "ticker:sim:BTC/USDT:1"
    assert btc[0].ts_ns > 0


async def test_reader_returns_at_once_when_nothing_matches(bus: Client) -> None:
    await _seed(bus, 10)
    assert await asyncio.wait_for(collect(bus, "MARKET", subjects=("md.sim.NOPE-USDT.ticker",)), 5) == []
    assert await asyncio.wait_for(collect(bus, "MARKET", start_seq=11), 5) == []
    assert await asyncio.wait_for(collect(bus, "DLQ"), 5) == []


async def test_reader_starts_at_a_time(bus: Client) -> None:
    await _seed(bus, 10)
    tenth = await bus.jetstream().get_msg("MARKET", 10)
    assert tenth.time is not None
    cut = tenth.time + dt.timedelta(milliseconds=1)  # after the tenth was stored
    await eventually(lambda: dt.datetime.now(dt.timezone.utc) > cut, what="the clock to pass the cut")
    pub = await Publisher(bus).start()
    await pub.publish(ticker("1", ts=99))
    later = await collect(bus, "MARKET", start_time=cut)
    assert [m.seq for m in later] == [11]


async def test_reader_follow_delivers_new_messages(bus: Client) -> None:
    await _seed(bus, 3)
    seen: list[int] = []

    async def follow() -> None:
        async for batch in read_stream(bus, "MARKET", follow=True):
            seen.extend(m.seq for m in batch)
            if len(seen) >= 5:
                return

    task = asyncio.create_task(follow())
    await eventually(lambda: len(seen) == 3, what="the history first")
    pub = await Publisher(bus).start()
    await pub.publish_all([ticker("1", ts=100), ticker("1", ts=101)])
    await asyncio.wait_for(task, 5)
    assert seen == [1, 2, 3, 4, 5]


async def test_any_nats_client_can_read_events_as_plain_json(bus: Client, nats_server) -> None:
    """No project code on the reading side: nats-py and the json module."""
    plain = await nats.connect(nats_server.url)
    got: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def on_msg(msg) -> None:
        if not got.done():
            got.set_result(json.loads(msg.data))

    await plain.subscribe("md.>", cb=on_msg)
    await plain.flush()
    pub = await Publisher(bus).start()
    await pub.publish(ticker("60000.5", ts=5))
    event = await asyncio.wait_for(got, 30)  # a budget for a loaded machine, not a speed check
    assert event["type"] == "ticker" and event["last"] == "60000.5" and event["symbol"] == "BTC/USDT:USDT"
    await plain.close()


async def test_streams_apply_is_idempotent_and_reports_changes(nc: Client) -> None:
    js = nc.jetstream()
    first = await streams.apply(js)
    assert {c.kind for c in first} == {"created"}
    assert {c.kind for c in await streams.apply(js)} == {"unchanged"}
    longer = streams.with_retention(streams.STREAMS, {"MARKET": streams.Retention(max_age=14 * streams.DAY)})
    changes = {c.name: c for c in await streams.apply(js, longer, ())}
    assert changes["MARKET"].kind == "updated" and "max_age 7d -> 14d" in str(changes["MARKET"])
    assert changes["ACCOUNT"].kind == "unchanged"
    assert (await js.stream_info("MARKET")).config.max_age == 14 * streams.DAY


async def test_reader_reads_messages_stored_without_headers_and_large_ones(bus: Client) -> None:
    js = bus.jetstream()
    await js.publish("md.sim.BTC-USDT.ticker", b"x" * 300_000)  # bigger than one socket read
    for i in range(20):
        await js.publish("md.sim.BTC-USDT.ticker", f'{{"n":{i}}}'.encode())  # no Nats-Msg-Id: a MSG frame
    got = await asyncio.wait_for(collect(bus, "MARKET"), 10)
    assert [m.seq for m in got] == list(range(1, 22))
    assert len(got[0].data) == 300_000 and got[0].headers() == {}
    assert json.loads(got[-1].data) == {"n": 19}


def test_reconnect_delays_grow_from_a_tenth_of_a_second_to_a_cap_with_jitter() -> None:
    middle = [reconnect_delay(n, 0.5) for n in range(12)]
    assert middle[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert max(middle) == pytest.approx(RECONNECT_MAX_S) and middle == sorted(middle)
    assert reconnect_delay(3, 0.0) < reconnect_delay(3, 0.999) <= 1.2 * reconnect_delay(3, 0.5)
    assert reconnect_delay(10_000, 0.5) == pytest.approx(RECONNECT_MAX_S)


async def test_a_client_comes_back_after_the_server_is_killed_and_restarted(
    nats_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await connect(nats_server.url, name="pytest-reconnect", attempts=3)
    try:
        await streams.apply(nc.jetstream())
        pub = await Publisher(nc).start()
        await pub.publish(ticker("100", ts=1))
        nats_server.kill()
        await eventually(lambda: not nc.is_connected, what="the client to notice the server is gone")
        # A few failed attempts: the backoff grows and is logged.
        await eventually(lambda: "still unreachable after 2 attempts" in caplog.text, what="failed reconnects")
        nats_server.start()
        await eventually(lambda: nc.is_connected, timeout=20, what="the client to reconnect")
        await pub.publish(ticker("101", ts=2))  # the publisher's reply subscription came back too
        info = await nc.jetstream().stream_info("MARKET")
        assert info.state.messages == 2  # the file store kept the first; the second went through
    finally:
        await nc.close()
    logged = caplog.text
    assert "disconnected from NATS" in logged and "still unreachable after 1 attempts" in logged
    assert "reconnected to NATS" in logged
