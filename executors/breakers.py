"""Risk breakers as the executor reads them: the `breakers` bucket, at every venue call.

Keys are scopes (`global`, `venue.<venue>`, `symbol.<venue>.<symbol token>`), values the last
BreakerChange for that scope. A watch on the bucket keeps a cache current the moment a change
is stored, and an entry confirmed more than `ttl` (100 ms) ago is read from the bucket again,
so an order never goes out on a breaker state older than that, even if the watch is broken.
Both the watch and the reads see only what JetStream stored: a write the stream refused never
enters the cache. A read that fails raises RetryLater: no order while the state is unknown.

A risk monitor that is not judging is itself a condition: with `heartbeat_ms` set, the risk
monitor's `heartbeat` key must be younger than that, or every market is `reduce_only`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bus.errors import RetryLater
from bus.streams import BREAKERS
from schemas.ops import BreakerChange, BreakerState, RiskHeartbeat, worst_breaker
from schemas.subjects import HEARTBEAT_KEY, breaker_scopes

log = logging.getLogger("executor.breakers")

_decoder = msgspec.json.Decoder(BreakerChange)
_beat = msgspec.json.Decoder(RiskHeartbeat)
STALE_AFTER = 0.1  # seconds: ADR 0005


class BreakerView:
    def __init__(self, nc: Client, ttl: float = STALE_AFTER, heartbeat_ms: int = 0) -> None:
        self.nc = nc
        self.ttl = ttl
        self.heartbeat_ms = heartbeat_ms  # 0: no risk monitor required
        self._cache: dict[str, tuple[float, BreakerState]] = {}
        self._kv: KeyValue | None = None
        self._beat_ts = 0  # wall-clock ms of the risk monitor's last heartbeat
        self._beat_read = -1e9  # monotonic time it was read
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> BreakerView:
        self._watch = asyncio.create_task(self._follow(), name="breaker-watch")
        return self

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.nc.jetstream().key_value(BREAKERS.name)
        return self._kv

    async def _follow(self) -> None:
        """Keep the cache current from the bucket's stored changes; restart the watch on failure."""
        while True:
            try:
                watcher = await (await self._bucket()).watchall()
                async for entry in watcher:
                    if entry is not None and entry.key != HEARTBEAT_KEY:
                        self._cache[entry.key] = (time.monotonic(), _state(entry.value, entry.operation))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reads still bound staleness; retry the watch
                log.debug("breaker watch ended (%s); restarting", exc)
            await asyncio.sleep(0.5)

    async def _read(self, scope: str) -> BreakerState:
        hit = self._cache.get(scope)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            kv = await self._bucket()
            try:
                entry = await kv.get(scope)
                state = _state(entry.value, entry.operation)
            except (KeyNotFoundError, NotFoundError):
                state = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure: fail closed
            raise RetryLater(f"breaker state unreadable ({exc!r})") from exc
        self._cache[scope] = (now, state)
        return state

    async def state_for(self, venue: str, symbol: str, account: str | None = None) -> tuple[BreakerState, str]:
        """The worst breaker covering this market, and the scope it comes from."""
        keys = breaker_scopes(venue, symbol, account)
        states = await asyncio.gather(*(self._read(s) for s in keys))
        worst = worst_breaker(states)
        if worst == "ok" and self.heartbeat_ms and not await self._risk_alive():
            return "reduce_only", HEARTBEAT_KEY
        return worst, next((k for k, s in zip(keys, states) if s == worst and worst != "ok"), "")

    async def _risk_alive(self) -> bool:
        """Whether the risk monitor's last heartbeat is younger than `heartbeat_ms` (read at most
        every `ttl`, like the breakers; an unreadable one fails closed)."""
        now = time.monotonic()
        if now - self._beat_read >= self.ttl:
            try:
                entry = await (await self._bucket()).get(HEARTBEAT_KEY)
                self._beat_ts = _beat.decode(entry.value).ts if entry.value else 0
            except (KeyNotFoundError, NotFoundError, msgspec.DecodeError):
                self._beat_ts = 0
            except Exception as exc:  # noqa: BLE001 - any failure: fail closed
                raise RetryLater(f"risk heartbeat unreadable ({exc!r})") from exc
            self._beat_read = now
        return time.time() * 1000 - self._beat_ts <= self.heartbeat_ms


def _state(value: bytes | None, operation: str | None) -> BreakerState:
    """The state a stored bucket entry says; a deleted key is `ok`; an unreadable one fails closed."""
    if operation in ("DEL", "PURGE") or not value:
        return "ok"
    try:
        return _decoder.decode(value).state
    except msgspec.DecodeError:
        return "halted"  # a breaker we cannot read is not a breaker we may ignore
