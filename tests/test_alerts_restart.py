"""`sqt run alerts` as a real process: killed with SIGKILL after some alerts were confirmed by
every channel and others by one only, then started again, the channels get every alert exactly
once; the secrets never show; a bad channel variable stops it with exit 2, naming the variable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer
from bus.publisher import Publisher
from monitors.alerts.testing import CHAT, SLACK_PATH, TOKEN, RecordingWebhook, risk_alert
from testkit.bus import eventually

ROOT = Path(__file__).resolve().parent.parent
IN_STREAM, CONSUMER = "IN_ALERTS_MAIN", "alerts-main"

pytestmark = pytest.mark.e2e


def config(tmp_path: Path, hook: RecordingWebhook) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(
        f"data_dir = '{tmp_path / 'data'}'\ngrids = []\n[alerts]\ninstance = 'main'\ntelegram_api = '{hook.url}'\n"
        "group_ms = 50\nslack_per_minute = 6000\nslack_burst = 100\ntelegram_per_minute = 6000\ntelegram_burst = 100\n"
        "backoff_ms = 50\nbackoff_max_ms = 200\nping_interval_ms = 60000\nping_wait_ms = 100\nsilence_ms = 60000\n"
    )
    return path


async def start(cfg: Path, url: str, log: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "--config",
            str(cfg),
            "run",
            "alerts",
            cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("SQT_")}, "NATS_URL": url, **env},
            stdout=out,
            stderr=out,
        )


async def live(nc: Client) -> bool:
    """The alerts process answers its status endpoint and its consumer exists (it reads)."""
    try:
        await nc.request("sqt.status.alerts.main", b"", timeout=0.5)
        await nc.jetstream().consumer_info(IN_STREAM, CONSUMER)
    except Exception:  # noqa: BLE001 - not yet
        return False
    return True


async def publish(nc: Client, *markers: str) -> None:
    pub = await Publisher(nc).start()
    try:
        for m in markers:
            await pub.publish(risk_alert(m, kind=f"kind-{m[::-1]}"))  # each its own condition; the marker once
    finally:
        await pub.close()


async def test_killed_after_partial_confirmations_and_restarted_every_channel_gets_every_alert_exactly_once(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    hook = await RecordingWebhook().start()
    cfg, log = config(tmp_path, hook), tmp_path / "alerts.log"
    proc = await start(cfg, nats_server.url, log, hook.environ())
    try:
        await eventually(lambda: live(bus), timeout=30, what="the alerts process live")
        both = [f"A{i}z" for i in range(5)]  # confirmed by both channels before the kill
        await publish(bus, *both)
        await eventually(lambda: all(hook.count(c, m) == 1 for c in ("slack", "telegram") for m in both), timeout=20, what="batch A")
        # Telegram fails from now on (its error page even quotes the token): batch B reaches Slack
        # only; its inputs stay unacked, and the process is killed.
        hook.fail("telegram", 502, f"bad gateway for /bot{TOKEN}/sendMessage")
        slack_only = [f"B{i}z" for i in range(5)]
        await publish(bus, *slack_only)
        await eventually(lambda: all(hook.count("slack", m) == 1 for m in slack_only), timeout=20, what="batch B on slack")
        await eventually(lambda: sum(r.status == 502 for r in hook.requests) >= 2, timeout=20, what="telegram refusing")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        info = await bus.jetstream().consumer_info(IN_STREAM, CONSUMER)
        assert info.ack_floor.stream_seq < (await bus.jetstream().stream_info(IN_STREAM)).state.last_seq  # B was not acked

        hook.fail("telegram", None)
        later = [f"C{i}z" for i in range(3)]
        await publish(bus, *later)  # stored while it is down
        proc = await start(cfg, nats_server.url, log, hook.environ())
        everything = both + slack_only + later
        await eventually(
            lambda: all(hook.count(c, m) >= 1 for c in ("slack", "telegram") for m in everything), timeout=30, what="every alert"
        )

        async def acked() -> bool:
            last = (await bus.jetstream().stream_info(IN_STREAM)).state.last_seq
            return (await bus.jetstream().consumer_info(IN_STREAM, CONSUMER)).ack_floor.stream_seq >= last

        await eventually(acked, timeout=20, what="every input acked after the restart")
        for channel in ("slack", "telegram"):
            assert {m: hook.count(channel, m) for m in everything} == dict.fromkeys(everything, 1), channel

        status = json.loads((await bus.request("sqt.status.alerts.main", b"", timeout=2)).data)
        assert status["channels"]["slack"]["waiting"] == 0
        assert TOKEN not in json.dumps(status) and SLACK_PATH not in json.dumps(status)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
        await hook.stop()
    text = log.read_text()
    assert "bad gateway for /bot<redacted>/sendMessage" in text  # the refusal is logged, redacted
    assert TOKEN not in text and SLACK_PATH.split("/")[-1] not in text and CHAT not in text
    assert "Traceback" not in text


async def test_a_bad_channel_variable_stops_it_with_exit_2_naming_the_variable_not_the_secret(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    hook = await RecordingWebhook().start()
    try:
        log = tmp_path / "alerts.log"
        proc = await start(config(tmp_path, hook), nats_server.url, log, {"SQT_TELEGRAM_BOT_TOKEN": TOKEN})
        assert await asyncio.wait_for(proc.wait(), 30) == 2
    finally:
        await hook.stop()
    text = log.read_text()
    assert "SQT_TELEGRAM_CHAT_ID" in text and TOKEN not in text and "Traceback" not in text


async def test_with_no_channel_it_says_so_loudly_and_still_consumes(bus: Client, nats_server: EmbeddedServer, tmp_path: Path) -> None:
    hook = await RecordingWebhook().start()
    log = tmp_path / "alerts.log"
    proc = await start(config(tmp_path, hook), nats_server.url, log, {})
    try:
        await eventually(lambda: live(bus), timeout=30, what="the alerts process live")
        await publish(bus, "N1")
        await eventually(lambda: "exposure high N1" in log.read_text(), timeout=20, what="the alert logged")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await hook.stop()
    text = log.read_text()
    assert "NO ALERT CHANNEL CONFIGURED" in text and not hook.requests
