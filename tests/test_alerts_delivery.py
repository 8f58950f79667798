"""The alerts monitor against a real nats-server and a local webhook that records what Slack and
Telegram would have received (monitors/alerts/testing.py), and can be told to refuse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.service import register
from monitors.alerts.channels import from_env
from monitors.alerts.config import AlertsConfig
from monitors.alerts.consumer import input_stream
from monitors.alerts.runner import AlertsMonitor
from monitors.alerts.store import Store
from monitors.alerts.testing import RecordingWebhook, breaker, finding, gap, order, risk_alert
from schemas.codec import encode
from testkit.bus import eventually

FAST = {
    "group_ms": 50,
    "slack_per_minute": 6000.0,
    "slack_burst": 100,
    "telegram_per_minute": 6000.0,
    "telegram_burst": 100,
    "backoff_ms": 50,
    "backoff_max_ms": 200,
    "ping_interval_ms": 60_000,
    "ping_wait_ms": 100,
    "silence_ms": 60_000,
}


@pytest.fixture
async def hook() -> AsyncIterator[RecordingWebhook]:
    h = await RecordingWebhook().start()
    yield h
    await h.stop()


@asynccontextmanager
async def running(nc: Client, hook: RecordingWebhook | None, **settings: Any) -> AsyncIterator[AlertsMonitor]:
    cfg = AlertsConfig(**{**FAST, **settings, "telegram_api": hook.url if hook else "http://127.0.0.1:9"})
    channels = from_env(hook.environ(), cfg.telegram_api) if hook else []
    publisher = await Publisher(nc).start()
    store = await Store(nc, publisher, cfg.confirm_ttl_s).open()
    async with aiohttp.ClientSession() as session:
        monitor = AlertsMonitor(nc, cfg, channels, publisher, store, session)
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        try:
            await asyncio.wait_for(monitor.consumer.caught_up.wait(), 20)
            yield monitor
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            await publisher.close()


async def settled(nc: Client, monitor: AlertsMonitor) -> bool:
    """Every input acked and nothing waiting for a channel."""
    last = (await nc.jetstream().stream_info(input_stream(monitor.cfg).name)).state.last_seq
    return last > 0 and monitor.consumer.seq >= last and all(s.waiting() == 0 for s in monitor.senders)


async def publish(nc: Client, *events: Any) -> None:
    pub = await Publisher(nc).start()
    try:
        for e in events:
            await pub.publish(e)
    finally:
        await pub.close()


def arrived(hook: RecordingWebhook, *markers: str) -> bool:
    return all(hook.count(ch, m) >= 1 for ch in ("slack", "telegram") for m in markers)


async def test_every_kind_of_alert_reaches_each_channel_exactly_once_and_what_is_no_alert_reaches_none(
    bus: Client, hook: RecordingWebhook
) -> None:
    async with running(bus, hook) as monitor:
        events = [breaker("B1"), breaker("B2", state="ok", previous="halted")]
        events += [finding("F1"), gap("G1"), gap("G2", account="main"), order("U1"), risk_alert("R1")]
        quiet = [order("Q1", status="open"), order("Q2", status="closed"), finding("Q3", kind="in_sync")]
        await publish(bus, *quiet, *events)
        await bus.jetstream().publish("dlq.md.sim.X-Y.ticker", b"junk", headers={"Sqt-Error": "bad D1", "Sqt-Consumer": "grid-x"})
        markers = ["B1", "B2", "xF1", "G1", "G2", "cU1", "R1", "bad D1"]
        await eventually(lambda: arrived(hook, *markers), timeout=20, what="every alert on both channels")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
        before = monitor.consumer.stats.processed
        # The same events again, stored twice (no Nats-Msg-Id, so JetStream keeps both): one alert
        # each, even the breaker's halt, which after its close is a new state of its condition.
        await bus.jetstream().publish("ops.risk.r1.alert", encode(risk_alert("R1")))
        await bus.jetstream().publish("ops.risk.r1.breaker", encode(breaker("B1")))
        await eventually(lambda: monitor.consumer.stats.processed == before + 2, timeout=20, what="the copies read")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
        for channel in ("slack", "telegram"):
            for marker in markers:
                assert hook.count(channel, marker) == 1, (channel, marker)
            assert not any(q in r.text for r in hook.requests for q in ("cQ1", "cQ2", "xQ3"))
        assert monitor.consumer.alerted == 8
        assert all(r.body["chat_id"] == "-100777" for r in hook.requests if r.channel == "telegram")


async def test_a_burst_travels_as_a_digest_and_each_alert_in_it_once(bus: Client, hook: RecordingWebhook) -> None:
    # One token, then one every two seconds: what arrives behind the first waits and is folded.
    pace = {"digest_lines": 50, "group_ms": 0, "slack_per_minute": 30.0, "slack_burst": 1, "telegram_per_minute": 30.0, "telegram_burst": 1}
    async with running(bus, hook, **pace) as monitor:
        markers = [f"S{i:02d}x" for i in range(30)]
        await publish(bus, *(risk_alert(m, kind=f"k{i}") for i, m in enumerate(markers)))
        await eventually(lambda: arrived(hook, *markers), timeout=20, what="the burst on both channels")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
        for channel in ("slack", "telegram"):
            assert all(hook.count(channel, m) == 1 for m in markers)
            accepted = hook.accepted(channel)
            assert len(accepted) < len(markers) and max(sum(m in r.text for m in markers) for r in accepted) > 1
            assert any(" alerts (" in r.text for r in accepted)


async def test_a_429_is_waited_out_as_told_then_the_alert_goes_once(bus: Client, hook: RecordingWebhook) -> None:
    hook.answer("slack", 429, {"Retry-After": "1"}, "rate_limited")
    hook.answer("telegram", 429, {}, {"ok": False, "error_code": 429, "description": "Too Many Requests", "parameters": {"retry_after": 1}})
    async with running(bus, hook) as monitor:
        await publish(bus, risk_alert("T1"))
        await eventually(lambda: arrived(hook, "T1"), timeout=20, what="the alert after the 429")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="its input acked")
        for channel in ("slack", "telegram"):
            refused, sent = [r for r in hook.requests if r.channel == channel]
            assert (refused.status, sent.status) == (429, 200) and sent.at - refused.at >= 1.0
            assert hook.count(channel, "T1") == 1


async def test_a_500_is_retried_with_backoff_until_it_is_sent(bus: Client, hook: RecordingWebhook) -> None:
    for _ in range(3):
        hook.answer("slack", 500, body="upstream broke")
    async with running(bus, hook, backoff_ms=200, backoff_max_ms=800) as monitor:
        await publish(bus, risk_alert("E1"))
        await eventually(lambda: arrived(hook, "E1"), timeout=20, what="the alert after three 500s")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="its input acked")
        slack = [r for r in hook.requests if r.channel == "slack"]
        assert [r.status for r in slack] == [500, 500, 500, 200]
        gaps = [b.at - a.at for a, b in zip(slack, slack[1:])]
        assert all(g >= 0.1 for g in gaps)  # at least half the first backoff, every time
        assert hook.count("slack", "E1") == 1 and hook.count("telegram", "E1") == 1
        assert "500" in monitor.senders[0].last_error or monitor.senders[0].last_error == ""


async def test_an_event_judged_longer_than_a_window_ago_and_still_not_everywhere_is_not_sent_again(
    bus: Client, hook: RecordingWebhook
) -> None:
    hook.fail("slack", 503)
    async with running(bus, hook, dedupe_window_ms=1) as monitor:
        await publish(bus, risk_alert("W1"))
        await eventually(lambda: hook.count("telegram", "W1") == 1, timeout=20, what="telegram")
        await bus.jetstream().publish("ops.risk.r1.alert", encode(risk_alert("W1")))  # its window is over
        await eventually(lambda: monitor.consumer.stats.processed == 2, timeout=20, what="the copy read")
        hook.fail("slack", None)
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
        assert hook.count("slack", "W1") == 1 and hook.count("telegram", "W1") == 1


async def test_a_failing_channel_holds_only_its_own_alerts_and_nothing_is_acked_before_it_confirms(
    bus: Client, hook: RecordingWebhook
) -> None:
    hook.fail("slack", 503)
    async with running(bus, hook) as monitor:
        await publish(bus, risk_alert("H1"), gap("H2"), breaker("H3"))
        await eventually(lambda: all(hook.count("telegram", m) == 1 for m in ("H1", "H2", "H3")), timeout=20, what="telegram")
        last = (await bus.jetstream().stream_info(input_stream(monitor.cfg).name)).state.last_seq
        await eventually(lambda: monitor.consumer.stats.processed >= 3, what="the consumer reading on")
        await eventually(lambda: len([r for r in hook.requests if r.channel == "slack"]) >= 2, what="slack retried")
        assert monitor.consumer.seq < last and not hook.accepted("slack")  # not acked: slack has not confirmed
        await publish(bus, risk_alert("H4", kind="other"))  # still read while the others wait (another condition)
        await eventually(lambda: hook.count("telegram", "H4") == 1, timeout=20, what="telegram gets the next one")
        hook.fail("slack", None)
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked once slack recovered")
        assert all(hook.count(ch, m) == 1 for ch in ("slack", "telegram") for m in ("H1", "H2", "H3", "H4"))


async def test_garbage_is_dead_lettered_once_and_its_dead_letter_alerts_once_without_a_loop(bus: Client, hook: RecordingWebhook) -> None:
    async with running(bus, hook) as monitor:
        await bus.jetstream().publish("md.sim.BTC-USDT-USDT.gap", b'{"type":"gap","garbage":true}')
        name = monitor.consumer.spec.name
        await eventually(lambda: arrived(hook, f"dead letter from {name}"), timeout=20, what="the DLQ arrival's alert")
        await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
        assert (await bus.jetstream().stream_info("DLQ")).state.messages == 1
        assert all(hook.count(ch, f"dead letter from {name}") == 1 for ch in ("slack", "telegram"))
        await publish(bus, risk_alert("after"))  # and it goes on
        await eventually(lambda: arrived(hook, "after"), timeout=20, what="the next alert")


async def test_a_component_that_stops_answering_its_ping_alerts_once_and_once_when_it_is_back(
    bus: Client, hook: RecordingWebhook, nats_server: Any
) -> None:
    from bus.connection import connect

    presence = {"ping_interval_ms": 200, "ping_wait_ms": 100, "silence_ms": 600}
    async with running(bus, hook, **presence) as monitor:
        other = await connect(nats_server.url, name="probe", attempts=3)
        try:
            service = await register(other, "probe", "p1", "a component", lambda: {})
            await eventually(lambda: monitor.pinger.presence.states().get("sqt-probe/p1") == "up", timeout=20, what="the probe seen")
            await service.stop()
            await eventually(lambda: arrived(hook, "sqt-probe/p1 stopped answering"), timeout=20, what="the down alert")
            service = await register(other, "probe", "p1", "a component", lambda: {})
            await eventually(lambda: arrived(hook, "sqt-probe/p1 answers again"), timeout=20, what="the recovery alert")
            await eventually(lambda: settled(bus, monitor), timeout=20, what="every input acked")
            await service.stop()
        finally:
            await other.close()
        for channel in ("slack", "telegram"):
            assert hook.count(channel, "sqt-probe/p1 stopped answering") == 1
            assert hook.count(channel, "sqt-probe/p1 answers again") == 1


async def test_with_no_channel_alerts_are_logged_and_consumed(bus: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alerts")
    async with running(bus, None) as monitor:
        await publish(bus, risk_alert("L1"))
        await eventually(lambda: settled(bus, monitor), timeout=20, what="the input acked without a channel")
    assert any("exposure high L1" in r.getMessage() and "no channel configured" in r.getMessage() for r in caplog.records)


def test_an_alert_key_is_the_message_id() -> None:
    # What the restart test relies on: an event's alert key survives a re-encode.
    e = risk_alert("K1", ts=1)
    assert msgspec.json.decode(encode(e), type=type(e)).id == "risk-K1"
