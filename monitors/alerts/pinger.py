"""Components that stop answering: ping every NATS micro service ($SRV.PING, what `nats micro ping`
and `sqt status` use), feed who answered to `Presence`, and publish each change as a RiskAlert on
`ops.alerts.<instance>.alert`.

Publishing rather than sending makes a presence alert an input like any other: stored, then
deduplicated, rate-limited, confirmed per channel and acked by the consumer, so a crash after
the publish loses nothing. A crash between noticing and publishing is covered by the presence
state in the bucket: it is saved after the publish, so the restart notices again (and the
deterministic id makes a second publish of the same episode one stored message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.publisher import Publisher
from monitors.alerts import metrics
from monitors.alerts.alerts import BACK, COMPONENT, DOWN, component_alert_message, short
from monitors.alerts.config import AlertsConfig
from monitors.alerts.presence import Change, Presence
from monitors.alerts.store import Store
from schemas.ops import RiskAlert

log = logging.getLogger("alerts")

PING = "$SRV.PING"


def service_name(answer: dict[str, object]) -> str | None:
    """`sqt-executor/sim-main`: the service's name and its instance (else its id), one word."""
    name = answer.get("name")
    if not isinstance(name, str) or not name:
        return None
    metadata = answer.get("metadata")
    instance = metadata.get("instance") if isinstance(metadata, dict) else None
    tail = instance if isinstance(instance, str) and instance else answer.get("id")
    return short(f"{name}/{tail}", 120).replace(" ", "_")


class Pinger:
    def __init__(
        self,
        nc: Client,
        publisher: Publisher,
        store: Store,
        cfg: AlertsConfig,
        *,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.nc = nc
        self.publisher = publisher
        self.store = store
        self.cfg = cfg
        self.now_ms = now_ms
        self.presence = Presence(cfg.silence_ms)
        self.unpublished: list[RiskAlert] = []
        self.last_error = ""

    async def ping(self) -> set[str]:
        answered: set[str] = set()

        async def on_answer(msg: Msg) -> None:
            try:
                doc = json.loads(msg.data)
            except ValueError:
                return
            if isinstance(doc, dict) and (name := service_name(doc)):
                answered.add(name)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_answer)
        try:
            await self.nc.publish(PING, b"", reply=inbox)
            await asyncio.sleep(self.cfg.ping_wait_ms / 1000)
        finally:
            await sub.unsubscribe()
        return answered

    def alert(self, change: Change) -> RiskAlert:
        kind = DOWN if change.down else BACK
        return RiskAlert(
            id=f"alerts:{self.cfg.instance}:{kind}:{change.service}:{change.episode}",
            component=COMPONENT,
            instance=self.cfg.instance,
            severity="critical" if change.down else "info",
            kind=kind,
            message=component_alert_message(change.service, change.down, change.silent_ms / 1000),
            ts=self.now_ms(),
        )

    async def run(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        await ready.wait()  # the consumer holds its lease: this is the one alerts process
        while not stop.is_set():
            try:
                self.presence.restore(await self.store.load_presence(), self.now_ms())
                break
            except Exception as exc:  # noqa: BLE001 - NATS away: wait for it
                log.warning("presence: could not load who answered before (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
        saved = None
        while not stop.is_set():
            try:
                changes = self.presence.observe(await self.ping(), self.now_ms())
                for change in changes:
                    log.warning("%s %s", change.service, "stopped answering" if change.down else "answers again")
                self.unpublished += [self.alert(c) for c in changes]
                while self.unpublished:
                    await self.publisher.publish(self.unpublished[0])
                    self.unpublished.pop(0)
                remembered = self.presence.remembered()
                if remembered != saved:
                    await self.store.save_presence(remembered)
                    saved = remembered
                states = list(self.presence.states().values())
                metrics.COMPONENTS.labels("up").set(states.count("up"))
                metrics.COMPONENTS.labels("down").set(states.count("down"))
                self.last_error = ""
            except Exception as exc:  # noqa: BLE001 - NATS away: what was not published is tried next round
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("presence: %s; trying again next round", self.last_error)
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, (self.cfg.ping_interval_ms - self.cfg.ping_wait_ms) / 1000))
            except asyncio.TimeoutError:
                pass
