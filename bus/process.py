"""The shell around a component's main coroutine: logging, uvloop, graceful stop on signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

import uvloop

from bus import log as buslog

Main = Callable[[asyncio.Event], Awaitable[None]]


def tune_gc() -> None:
    """Components allocate many short-lived objects per event. Freezing the start-up heap keeps
    full collections from walking it again and again, and a larger first generation means
    fewer collections (bench/bus.py: replay ~4% faster; more when a process holds much state)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run(component: str, main: Main) -> int:
    """Run `main(stop)` until it returns; SIGINT/SIGTERM set `stop` for a graceful end."""
    buslog.setup(component)

    async def runner() -> None:
        tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        uvloop.run(runner())
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # last resort: one clear line, not a traceback wall
        logging.getLogger(component).error("stopped on an unexpected error: %r", exc, exc_info=True)
        return 1
    return 0
