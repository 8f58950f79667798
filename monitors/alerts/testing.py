"""A local stand-in for Slack's webhook and Telegram's Bot API, for tests (in the spirit of
FastStream's testing.py): it records every request and answers what a test tells it to, so a
test sees exactly what a channel would have received, and can make it refuse (429, 500).

    hook = await RecordingWebhook().start()
    environ = hook.environ()        # SQT_SLACK_WEBHOOK_URL, SQT_TELEGRAM_BOT_TOKEN, SQT_TELEGRAM_CHAT_ID
    cfg = AlertsConfig(telegram_api=hook.url)
    hook.answer("slack", 429, {"Retry-After": "1"})   # the next Slack request is refused once
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitors.alerts.channels import SLACK_URL, TELEGRAM_CHAT, TELEGRAM_TOKEN

TOKEN = "123456:TEST-token-never-in-logs"
CHAT = "-100777"
SLACK_PATH = "/services/T0TEST/B0TEST/never-in-logs-either"


@dataclass(frozen=True)
class Recorded:
    channel: str
    body: dict[str, Any]
    status: int  # what it was answered
    at: float  # time.monotonic()

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class RecordingWebhook:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: dict[str, deque[_Answer]] = {"slack": deque(), "telegram": deque()}
        self._failing: dict[str, _Answer | None] = {"slack": None, "telegram": None}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> RecordingWebhook:
        app = web.Application()
        app.router.add_post(SLACK_PATH, self._slack)
        app.router.add_post(f"/bot{TOKEN}/sendMessage", self._telegram)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def environ(self) -> dict[str, str]:
        return {SLACK_URL: self.url + SLACK_PATH, TELEGRAM_TOKEN: TOKEN, TELEGRAM_CHAT: CHAT}

    def answer(self, channel: str, status: int, headers: dict[str, str] | None = None, body: Any = None) -> None:
        """Answer the channel's next request so (once; call again to queue more)."""
        self._script[channel].append(_Answer(status, headers or {}, _bytes(body)))

    def fail(self, channel: str, status: int | None, body: Any = None) -> None:
        """Answer every request of the channel with `status` until told None."""
        self._failing[channel] = None if status is None else _Answer(status, {}, _bytes(body))

    def accepted(self, channel: str) -> list[Recorded]:
        return [r for r in self.requests if r.channel == channel and r.status == 200]

    def count(self, channel: str, marker: str) -> int:
        """How many times an accepted message of the channel mentioned `marker`."""
        return sum(r.text.count(marker) for r in self.accepted(channel))

    async def _slack(self, request: web.Request) -> web.Response:
        return await self._record("slack", request, b"ok")

    async def _telegram(self, request: web.Request) -> web.Response:
        return await self._record("telegram", request, b'{"ok":true,"result":{"message_id":1}}')

    async def _record(self, channel: str, request: web.Request, ok: bytes) -> web.Response:
        body = await request.json()
        script = self._script[channel]
        answer = script.popleft() if script else self._failing[channel] or _Answer(200, {}, ok)
        self.requests.append(Recorded(channel, body, answer.status, time.monotonic()))
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)


def _bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


# ----------------------------------------------------------------------------- events that alert
# Each carries `marker` in the text an alert shows, so a test finds it in what a channel got.


def now_ms() -> int:
    return int(time.time() * 1000)


def risk_alert(marker: str, ts: int | None = None, **kw: Any) -> Any:
    from schemas.ops import RiskAlert

    fields: dict[str, Any] = {"instance": "r1", "severity": "warning", "kind": "exposure", "message": f"exposure high {marker}"}
    fields.update(kw)
    return RiskAlert(id=f"risk-{marker}", ts=now_ms() if ts is None else ts, **fields)


def breaker(marker: str, state: str = "halted", scope: str = "global", ts: int | None = None, **kw: Any) -> Any:
    from decimal import Decimal

    from schemas.ops import BreakerChange, Trip

    trips = [Trip(breaker="daily_loss", state="halted", value=Decimal(2500), limit=Decimal(2000), since=1)] if state != "ok" else []
    return BreakerChange(
        id=f"breaker-{marker}",
        instance="r1",
        scope=scope,
        state=state,  # type: ignore[arg-type]
        previous=kw.pop("previous", "ok"),
        reason=f"daily loss {marker}",
        trips=trips,
        ts=now_ms() if ts is None else ts,
        **kw,
    )


def finding(marker: str, kind: str = "ghost_order", ts: int | None = None) -> Any:
    from schemas.ops import ReconciliationFinding

    return ReconciliationFinding(
        id=f"finding-{marker}",
        instance="rec1",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        kind=kind,  # type: ignore[arg-type]
        detail="an order nobody placed",
        action="canceled",
        client_order_id=f"x{marker}",
        ts=now_ms() if ts is None else ts,
    )


def gap(marker: str, account: str | None = None, ts: int | None = None) -> Any:
    from schemas.market import GapMarker

    t = now_ms() if ts is None else ts
    return GapMarker(
        id=f"gap-{marker}",
        venue="sim",
        symbol="BTC/USDT:USDT",
        account=account,
        stream="order" if account else "ticker",
        since=t - 5_000,
        until=t,
        reason=f"socket closed {marker}",
        ts=t,
        ts_local=t,
    )


def order(marker: str, status: str = "unknown", ts: int | None = None) -> Any:
    from decimal import Decimal

    from schemas.account import OrderUpdate

    t = now_ms() if ts is None else ts
    return OrderUpdate(
        id=f"order-{marker}-{status}",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        client_order_id=f"c{marker}",
        side="buy",
        price=Decimal(100),
        amount=Decimal(1),
        remaining=Decimal(1),
        status=status,  # type: ignore[arg-type]
        message="venue unreachable",
        ts=t,
        ts_local=t,
    )


# ----------------------------------------------------------------------------- a running monitor

FAST: dict[str, Any] = {
    "group_ms": 20,
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


async def running_monitor(nc: Any, stack: Any, stop: Any, **settings: Any) -> tuple[Any, RecordingWebhook]:
    """An alerts monitor at full pace, sending to a recording webhook, until `stop`; everything
    it needs is closed by `stack` (an AsyncExitStack). For the bad-input suite (testkit/hostile.py)."""
    import asyncio

    import aiohttp

    from bus.publisher import Publisher
    from monitors.alerts.channels import from_env
    from monitors.alerts.config import AlertsConfig
    from monitors.alerts.runner import AlertsMonitor
    from monitors.alerts.store import Store

    hook = await RecordingWebhook().start()
    stack.push_async_callback(hook.stop)
    cfg = AlertsConfig(**{**FAST, **settings, "telegram_api": hook.url})
    publisher = await Publisher(nc).start()
    stack.push_async_callback(publisher.close)
    store = await Store(nc, publisher, cfg.confirm_ttl_s).open()
    session = await stack.enter_async_context(aiohttp.ClientSession())
    monitor = AlertsMonitor(nc, cfg, from_env(hook.environ(), cfg.telegram_api), publisher, store, session)
    task = asyncio.create_task(monitor.run(stop))
    stack.push_async_callback(asyncio.wait_for, task, 30)
    await asyncio.wait_for(monitor.consumer.caught_up.wait(), 30)
    return monitor, hook
