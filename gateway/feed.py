"""The gateway's feed: read the streams back, then follow them, into the view and the hub.

A gateway is a read-only follower (no durable consumer, no acks, no lease): any number of them
can serve the same streams, and one coming or going never touches trading. On start each stream
is read from a lookback window (what the first screen needs), then followed live from where
that read ended; a broken read is resumed after the last sequence folded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client

from bus.contract import StoredMsg
from bus.reader import read_stream
from gateway.config import GatewayConfig
from gateway.frames import encode
from gateway.hub import Hub
from gateway.view import View
from schemas.codec import ACCOUNT_TYPES, MARKET_TYPES, OPS_TYPES, DecodeError, decoder, union
from schemas.subjects import SubjectError, subject_of

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Follow:
    stream: str
    subjects: tuple[str, ...]
    lookback_minutes: Callable[[GatewayConfig], int]
    types: tuple[type, ...]


FOLLOWED = (
    Follow("MARKET", ("md.*.*.candle1m",), lambda c: c.market_lookback_minutes, MARKET_TYPES),
    Follow("ACCOUNT", ("acct.>",), lambda c: c.account_lookback_minutes, ACCOUNT_TYPES),
    Follow("OPS", ("ops.*.*.state", "ops.*.*.alert", "ops.reconciler.*.finding"), lambda c: c.account_lookback_minutes, OPS_TYPES),
)


def decoders() -> dict[str, Callable[[bytes], object]]:
    return {f.stream: decoder(union(*f.types)).decode for f in FOLLOWED}


def admit(decode: Callable[[bytes], object], subject: str, data: bytes) -> object | None:
    """The stored event, or None when it does not decode or its body names another subject."""
    try:
        event = decode(data)
        if subject_of(event) != subject:
            raise ValueError(f"the body names another subject than {subject}")
    except (DecodeError, SubjectError, ValueError) as exc:
        log.debug("gateway: skipped a stored event on %s: %s", subject, exc)
        return None
    return event


@dataclass
class FeedState:
    ready: dict[str, bool] = field(default_factory=lambda: {f.stream: False for f in FOLLOWED})
    skipped: int = 0  # stored events that do not decode or contradict their subject
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)


class Feed:
    def __init__(self, nc: Client, config: GatewayConfig, view: View, hub: Hub) -> None:
        self.nc, self.config, self.view, self.hub = nc, config, view, hub
        self.state = FeedState()

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(f) for f in FOLLOWED))

    async def _follow(self, f: Follow) -> None:
        decode = decoders()[f.stream]
        events = self.hub.metrics.events.labels(f.stream)
        delay = 0.25
        while True:
            try:
                if not self.state.ready[f.stream]:
                    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=f.lookback_minutes(self.config))
                    end = await self._last_seq(f.stream, 0)  # before the read: what is stored after it is followed
                    async for batch in read_stream(self.nc, f.stream, start_time=since, subjects=f.subjects):
                        self._fold(f.stream, batch, decode, live=False)
                        events.inc(len(batch))
                    self.view.positions[f.stream] = max(self.view.positions[f.stream], end)
                    self.state.ready[f.stream] = True
                    log.info("gateway: %s read back, following from %d", f.stream, self.view.positions[f.stream])
                start = self.view.positions[f.stream] + 1
                async for batch in read_stream(self.nc, f.stream, start_seq=start, subjects=f.subjects, follow=True):
                    self._fold(f.stream, batch, decode, live=True)
                    events.inc(len(batch))
                    delay = 0.25
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken read is resumed, never the end of the gateway
                self.state.restarts += 1
                log.warning("gateway: reading %s failed (%s); again in %.1fs", f.stream, exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _last_seq(self, stream: str, default: int) -> int:
        try:
            return int((await self.nc.jetstream().stream_info(stream)).state.last_seq)
        except Exception:  # noqa: BLE001 - the next read starts after what was folded
            return default

    def _fold(self, stream: str, batch: list[StoredMsg], decode: Callable[[bytes], object], live: bool) -> None:
        view, hub = self.view, self.hub
        seen = hub.metrics.market_seen
        for seq, subject, data, _headers, stored_ns in batch:
            event = admit(decode, subject, data)
            if event is None:
                self.state.skipped += 1
                view.positions[stream] = max(view.positions[stream], seq)
                continue
            routed = view.apply(stream, seq, event)
            if routed is None:
                continue
            if stream == "MARKET" and routed.market is not None:
                seen[routed.market] = stored_ns  # feed staleness (gateway/metrics.py)
            text = encode(routed.frame)
            view.remember(routed, text)
            if live:
                hub.publish(routed, text, stored_ns)

    @property
    def ready(self) -> bool:
        return all(self.state.ready.values())
