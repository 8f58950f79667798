"""Consumer checkpoints: a state snapshot and the input sequence it reflects, in a KV bucket."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NotFoundError

from bus.streams import CHECKPOINTS
from schemas import subjects

S = TypeVar("S")


class Checkpoint(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    seq: int  # last input stream sequence folded into `state`
    state: S


def subject(key: str) -> str:
    return subjects.kv(CHECKPOINTS.name, key)


_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(checkpoint: Checkpoint[Any]) -> bytes:
    return _encoder.encode(checkpoint)


async def load(nc: Client, key: str, state_type: Any) -> Checkpoint[Any] | None:
    """The latest checkpoint for `key`, or None. A checkpoint that no longer decodes (the state
    type changed incompatibly) raises msgspec.ValidationError: better to stop than to guess."""
    kv = await nc.jetstream().key_value(CHECKPOINTS.name)
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    return msgspec.json.decode(entry.value, type=Checkpoint[state_type])


async def delete(nc: Client, key: str) -> None:
    kv = await nc.jetstream().key_value(CHECKPOINTS.name)
    try:
        await kv.delete(key)  # not purge: buckets refuse rollups (bus/streams.py apply_bucket)
    except (KeyNotFoundError, NotFoundError):
        pass
