"""What must survive a restart, in the `alerts` KV bucket (its TTL bounds it):

- `sent.<channel>.<hash of the alert key>`: the channel confirmed this alert. Written before the
  input is acked; read before a send. So an input redelivered after a crash (it was not acked:
  another channel had not confirmed) is not sent again to the channel that had it.
- `presence`: who answered the ping, and who is down since when (one small value).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bus.publisher import Publisher
from bus.streams import cluster_nodes
from monitors.alerts.presence import Remembered
from schemas import subjects

BUCKET = "alerts"
PRESENCE = "presence"


def sent_key(channel: str, alert_key: str) -> str:
    # Alert keys are message ids: any text. KV keys allow few characters; a digest is one of them.
    return f"sent.{channel}.{hashlib.sha256(alert_key.encode()).hexdigest()[:40]}"


class Store:
    def __init__(self, nc: Client, publisher: Publisher, ttl_s: float) -> None:
        self._nc = nc
        self._publisher = publisher
        self._ttl_s = ttl_s
        self._kv: KeyValue | None = None

    async def open(self) -> Store:
        js = self._nc.jetstream()
        try:
            self._kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            self._kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    description="alerts: per-channel confirmations and who answers the ping",
                    history=1,
                    ttl=self._ttl_s,
                    storage=StorageType.FILE,
                    replicas=await cluster_nodes(js),  # a copy on each node of a cluster
                )
            )
        return self

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "Store.open() first"
        return self._kv

    async def sent(self, channel: str, keys: Iterable[str]) -> set[str]:
        """Which of these alerts the channel confirmed already (in this process or an earlier one)."""
        wanted = list(dict.fromkeys(keys))
        found = await asyncio.gather(*(self._has(sent_key(channel, k)) for k in wanted))
        return {k for k, hit in zip(wanted, found) if hit}

    async def _has(self, key: str) -> bool:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return False
        return entry.value is not None

    async def confirm(self, channel: str, keys: Iterable[str], at_ms: int) -> None:
        """Record that the channel has these alerts; returns once JetStream stored every record."""
        value = str(at_ms).encode()
        futures = [await self._publisher.send(subjects.kv(BUCKET, sent_key(channel, k)), value) for k in dict.fromkeys(keys)]
        await asyncio.gather(*futures)

    async def load_presence(self) -> Remembered:
        try:
            entry = await self.kv.get(PRESENCE)
        except (KeyNotFoundError, NotFoundError):
            return Remembered()
        try:
            return msgspec.json.decode(entry.value or b"{}", type=Remembered)
        except msgspec.DecodeError:
            return Remembered()  # written by an older version: relearn who answers

    async def save_presence(self, remembered: Remembered) -> None:
        await self.kv.put(PRESENCE, msgspec.json.encode(remembered))
