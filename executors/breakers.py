"""Risk breakers as the executor reads them: the `breakers` bucket, before every new order.

Keys are scopes (`global`, `venue.<venue>`, `symbol.<venue>.<symbol token>`), values the last
BreakerChange for that scope. A read is cached for a second, and every write to the bucket
(a KV put is an ordinary NATS message on `$KV.breakers.<key>`) updates the cache the moment it
happens, so an order does not wait on three bucket reads and still never runs on a breaker
state older than the last write it could have seen. A read that fails raises RetryLater: no
order goes out while the breaker state is unknown.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NotFoundError

from bus.errors import RetryLater
from bus.streams import BREAKERS
from schemas import subjects
from schemas.ops import BreakerChange, BreakerState, worst_breaker
from schemas.subjects import breaker_scopes

_decoder = msgspec.json.Decoder(BreakerChange)


class BreakerView:
    def __init__(self, nc: Client, ttl: float = 1.0) -> None:
        self.nc = nc
        self.ttl = ttl
        self._cache: dict[str, tuple[float, BreakerState]] = {}
        self._kv = None
        self._prefix = subjects.kv(BREAKERS.name, "")

    async def start(self) -> BreakerView:
        await self.nc.subscribe(subjects.kv(BREAKERS.name, ">"), cb=self._on_write)
        return self

    async def _on_write(self, msg: Msg) -> None:
        scope = msg.subject[len(self._prefix) :]
        operation = (msg.headers or {}).get("KV-Operation")
        try:
            state: BreakerState = "ok" if operation in ("DEL", "PURGE") or not msg.data else _decoder.decode(msg.data).state
        except msgspec.DecodeError:
            self._cache.pop(scope, None)  # unreadable: the next order reads the bucket itself
            return
        self._cache[scope] = (time.monotonic(), state)

    async def _read(self, scope: str) -> BreakerState:
        hit = self._cache.get(scope)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            if self._kv is None:
                self._kv = await self.nc.jetstream().key_value(BREAKERS.name)
            try:
                entry = await self._kv.get(scope)
                state: BreakerState = _decoder.decode(entry.value).state if entry.value else "ok"
            except (KeyNotFoundError, NotFoundError):
                state = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure: fail closed
            raise RetryLater(f"breaker state unreadable ({exc!r})") from exc
        self._cache[scope] = (now, state)
        return state

    async def state_for(self, venue: str, symbol: str) -> tuple[BreakerState, str]:
        """The worst breaker covering this market, and the scope it comes from."""
        keys = breaker_scopes(venue, symbol)
        states = await asyncio.gather(*(self._read(s) for s in keys))
        worst = worst_breaker(states)
        return worst, next((k for k, s in zip(keys, states) if s == worst and worst != "ok"), "")
