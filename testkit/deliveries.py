"""JetStream deliveries built by hand, for driving a runtime's `process` one batch at a time, and
what the runtime then acks: the reply subject of each delivery is under `prefix`, a stream that
does not exist, so the acks arrive as plain messages a test can read."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.reader import read_stream
from schemas.codec import encode
from testkit.bus import eventually


def handmade(nc: Client, prefix: str, seq: int, body: Any, subject: str, *, pending: int = 0, ts_ms: int = 1) -> Msg:
    """Stream sequence `seq` stored at `ts_ms`, `pending` more behind it (as JetStream says so)."""
    data = body if isinstance(body, bytes) else encode(body)
    reply = f"{prefix}.1.{seq}.{seq}.{ts_ms * 1_000_000}.{pending}"
    return Msg(_client=nc, subject=subject, reply=reply, data=data)


class Acks:
    """Every ack sent to the deliveries under `prefix`: (stream seq, payload)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.got: list[tuple[int, bytes]] = []

    async def start(self, nc: Client) -> Acks:
        async def on(msg: Msg) -> None:
            self.got.append((int(msg.subject.split(".")[5]), msg.data))

        await nc.subscribe(f"{self.prefix}.>", cb=on)
        await nc.flush()
        return self

    async def settled(self, nc: Client, n: int) -> list[tuple[int, bytes]]:
        await nc.flush()
        await eventually(lambda: len(self.got) >= n, what=f"{n} acks")
        await nc.flush()
        return self.got


async def stored(nc: Client, stream: str) -> list[Any]:
    """Every message of a stream (none when it is empty)."""
    if (await nc.jetstream().stream_info(stream)).state.messages == 0:
        return []
    return [m async for batch in read_stream(nc, stream) for m in batch]
