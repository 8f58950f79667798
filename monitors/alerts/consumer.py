"""The alerts consumer: reads its input stream, turns inputs into alerts, hands them to the
channels' senders, and acks an input only once every channel confirmed its alert (or it raised
none). It never waits for a send: `process` returns at once, acks follow confirmations.

It is built on the session machinery every consumer shares (bus/consumer.py: lease, durable
consumer recreated at the position it knows, continuous pull, DLQ, checkpoints of its position),
not on the handler runtime (bus/handler.py), which acks a batch only after every input of it was
handled, so one Telegram 429 would hold every later input (docs/adr/0013-alerts.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import Consumer, ConsumerSpec, delivery
from bus.contract import admit
from bus.publisher import MSG_ID, PubAck, Publisher
from bus.streams import MINUTE, Source, StreamSpec
from monitors.alerts import alerts, metrics
from monitors.alerts.alerts import Alert, AlertInput
from monitors.alerts.config import AlertsConfig
from monitors.alerts.dedupe import Dedupe
from monitors.alerts.tracker import Tracker
from schemas import subjects

log = logging.getLogger("alerts")

PROGRESS_EVERY_S = 10.0  # in-progress acks for waiting inputs, well inside ack_wait
ACK_WAIT_S = 30.0


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def add(self, alert: Alert) -> None: ...


def input_stream(cfg: AlertsConfig) -> StreamSpec:
    """Everything it reads, sourced into one stream from its creation on: one durable consumer,
    one lease, one position; a first start alerts on what happens from now, not on a year of
    ACCOUNT history."""
    return StreamSpec(
        name=f"IN_ALERTS_{cfg.instance.upper()}",
        subjects=(),
        description=f"inputs of the alerts monitor {cfg.instance}: gaps, unknown orders, breakers, findings, risk alerts, dead letters",
        max_age=float(cfg.input_max_age_s),
        duplicate_window=2 * MINUTE,
        sources=(
            Source("MARKET", (subjects.md("*", "*", "gap"),)),
            Source("ACCOUNT", (subjects.acct("*", "*", "*", "order"), subjects.acct("*", "*", "*", "gap"))),
            Source(
                "OPS",
                (subjects.ops("risk", "*", "breaker"), subjects.ops("reconciler", "*", "finding"), subjects.ops("*", "*", "alert")),
            ),
            Source("DLQ", (subjects.dlq(subjects.TAIL),)),
        ),
        sources_from_now=True,
    )


def alerts_spec(cfg: AlertsConfig) -> ConsumerSpec:
    stream = input_stream(cfg)
    return ConsumerSpec(
        name=f"alerts-{cfg.instance}",
        stream=stream.name,
        input_type=AlertInput,
        outputs=(subjects.ops(alerts.COMPONENT, cfg.instance, "alert"),),  # presence alerts (pinger.py)
        input_stream=stream,
        batch=256,
        checkpoint_interval=1.0,
        ack_wait=ACK_WAIT_S,
        max_ack_pending=cfg.max_ack_pending,
    )


@dataclass
class _Pending:
    seq: int
    left: set[str] = field(default_factory=set)  # channels that have not confirmed it yet


class AlertsConsumer(Consumer):
    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        cfg: AlertsConfig,
        publisher: Publisher | None = None,
        *,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        super().__init__(nc, spec, publisher)
        self.cfg = cfg
        self.now_ms = now_ms
        self.tracker = Tracker()
        self.dedupe = Dedupe(cfg.dedupe_window_ms)
        self.channels: dict[str, Channel] = {}
        self.pending: dict[str, _Pending] = {}  # alert key -> its input and the channels it waits for
        self.alerted = 0
        self._progress_at = time.monotonic()

    def attach(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    # ----------------------------------------------------------------- the session

    async def prepare(self) -> None:
        # Where to resume: the last input acked, as the old consumer knew it, as the checkpoint
        # knew it, or as we know it (an ack may not have reached a server that went away).
        cp = await checkpoints.load(self.nc, self.spec.name, type(None))
        acked, _delivered = await self.positions()
        self.seq = max(self.seq, acked, cp.seq if cp else 0)
        self._checkpointed_seq = self.seq if cp and cp.seq == self.seq else -1
        self.tracker.stale()  # inputs in flight keep their place; their redelivery brings new handles

    async def process(self, msgs: list[Msg]) -> None:
        futures: list[asyncio.Future[PubAck]] = []
        dead: list[tuple[int, Msg]] = []
        for msg in msgs:
            seq, stored_ns, pending = delivery(msg)
            self.stats.lag = pending
            if seq <= self.seq or not self.tracker.add(seq, msg):
                self.stats.redelivered += 1  # acked already, or in flight since an earlier session
                continue
            self.stats.processed += 1
            if msg.subject.startswith("dlq."):
                self._route(
                    seq,
                    alerts.from_dead_letter(_key(msg, None, seq), msg.subject, msg.headers or {}, len(msg.data), stored_ns // 1_000_000),
                )
                continue
            event, reason = admit(self.rules, msg.subject, msg.data, stored_ns)
            if reason:
                await self.send_dead_letter(msg, seq, reason, futures)
                dead.append((seq, msg))
                continue
            self._route(seq, alerts.from_event(_key(msg, event, seq), event))
        if futures:
            await asyncio.gather(*futures)  # the DLQ copies are stored before their inputs end
        for seq, msg in dead:
            await self.nc.publish(msg.reply, b"+TERM")
            self.tracker.done(seq)
        await self.settle_acks()

    def _route(self, seq: int, alert: Alert | None) -> None:
        if alert is None:
            metrics.IGNORED.inc()
            self.tracker.done(seq)
            return
        verdict, alert = self.dedupe.judge(alert, self.now_ms())
        if verdict == "new" and alert.key in self.pending:
            verdict = "duplicate"  # judged longer than a window ago and still not everywhere
        metrics.ALERTS.labels(alert.kind, verdict).inc()
        if verdict != "new":
            self.tracker.done(seq)
            return
        self.alerted += 1
        log.log(
            logging.WARNING if alert.severity != "info" else logging.INFO,
            "alert [%s] %s%s%s",
            alert.severity,
            alert.title,
            f": {alert.detail}" if alert.detail else "",
            "" if self.channels else " (no channel configured: logged only)",
        )
        if not self.channels:
            self.tracker.done(seq)
            return
        self.pending[alert.key] = _Pending(seq, set(self.channels))
        for channel in self.channels.values():
            channel.add(alert)

    def confirmed(self, channel: str, batch: list[Alert]) -> None:
        """A channel has these alerts (sent now, or confirmed before a restart)."""
        for alert in batch:
            pending = self.pending.get(alert.key)
            if pending is None:
                continue
            pending.left.discard(channel)
            if not pending.left:
                del self.pending[alert.key]
                self.tracker.done(pending.seq)

    async def settle_acks(self) -> None:
        """Ack-all the last input of the done prefix (see tracker.py)."""
        ready = self.tracker.ackable()
        metrics.UNACKED.set(len(self.tracker))
        if ready is None:
            return
        seq, msg = ready
        await self.nc.publish(msg.reply, b"+ACK")
        self._since_checkpoint += seq - self.seq
        self.seq = self.stats.last_seq = seq

    async def idle(self) -> None:
        await self.settle_acks()
        if time.monotonic() - self._progress_at >= PROGRESS_EVERY_S:
            # Inputs waiting for a channel stay delivered-not-acked; without this the server
            # would redeliver each after ack_wait (harmless here, but noise on the wire).
            self._progress_at = time.monotonic()
            for handle in list(self.tracker.handles()):
                await self.nc.publish(handle.reply, b"+WPI")
        await self.checkpoint()

    async def finish(self) -> None:
        await self.settle_acks()
        await self.checkpoint(force=True)

    def waiting(self) -> int:
        return self.tracker.waiting()


def _key(msg: Msg, event: Any, seq: int) -> str:
    """The event's identity: its Nats-Msg-Id (what JetStream deduplicates by, and what our
    publishers set to the body's deterministic id), else the body's id, else its place."""
    headers = msg.headers or {}
    msg_id = headers.get(MSG_ID) or getattr(event, "id", None)
    return str(msg_id) if msg_id else f"seq:{msg.subject}:{seq}"
