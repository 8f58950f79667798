"""The raw nats-py ceilings the benchmarks compare the project's paths with."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from schemas.market import Ticker


async def ordered_read(nc: nats.NATS, n: int, subject: str, stream: str | None = None) -> float:
    """Messages/s of nats-py's ordered push consumer reading and decoding `n` tickers."""
    js = nc.jetstream()
    dec = msgspec.json.Decoder(Ticker)
    done = asyncio.Event()
    count = 0

    async def cb(msg: Any) -> None:
        nonlocal count
        dec.decode(msg.data)
        count += 1
        if count >= n:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(subject, stream=stream, cb=cb, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    await done.wait()
    rate = n / (time.perf_counter() - started)
    await sub.unsubscribe()
    return rate
