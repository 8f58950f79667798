"""The SumCore consumer as a real process, for kill -9 tests: `python -m testkit.sum_consumer URL`."""

from __future__ import annotations

import asyncio
import sys

from bus import process
from bus.connection import connect
from bus.runtime import ConsumerRuntime
from testkit.cores import SumCore, sum_spec


async def main(stop: asyncio.Event) -> None:
    nc = await connect(sys.argv[1], name="sum-consumer")
    runtime = ConsumerRuntime(nc, sum_spec(checkpoint_every=300, checkpoint_interval=0.2, batch=64), SumCore())
    await runtime.run(stop)
    await nc.close()


if __name__ == "__main__":
    sys.exit(process.run("sum-consumer", main))
