"""The shell around a component's main coroutine: logging, uvloop, graceful stop on signals.

Exit codes say what a supervisor should do (`sqt up` reads them):
- 0: stopped when asked;
- 1: failed unexpectedly: restart it;
- 2: restarting cannot help (a configuration error, or another live process already runs this
  consumer, `LeaseHeld`): one line says why, without a traceback.

A stop is bounded: SIGINT/SIGTERM set `stop`, and `main` gets `stop_within` seconds to return
(checkpoint, deregister, close). Past that, or on a second signal, it is cancelled: a stop
while NATS is down must not hang on a checkpoint that cannot be stored, and nothing is lost
(the next start recovers from the log, as after kill -9).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from bus import log as buslog
from bus.auth import AuthError
from bus.errors import LeaseHeld

Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DO_NOT_RESTART = 2
STOP_WITHIN = 2.0  # seconds; below `sqt up`'s grace period, so a stop never ends in SIGKILL

# Errors that a restart cannot fix; their message is the whole story.
DO_NOT_RESTART: tuple[type[BaseException], ...] = (LeaseHeld, AuthError)  # AuthError: a credentials file to fix first


def tune_gc() -> None:
    """Components allocate many short-lived objects per event. Freezing the start-up heap keeps
    full collections from walking it again and again, and a larger first generation means
    fewer collections (bench/bus.py: replay ~4% faster; more when a process holds much state)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _where(task: asyncio.Task[None]) -> str:
    """Where a task waits, innermost last (asyncio's own frames left out): which shutdown step
    did not finish, in one line."""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None and f"{os.sep}asyncio{os.sep}" not in frame.f_code.co_filename:
            path = Path(frame.f_code.co_filename)
            frames.append(f"{frame.f_code.co_name} ({path.parent.name}/{path.name}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(frames[-3:]) or "?"


def run(component: str, main: Main, *, stop_within: float = STOP_WITHIN) -> int:
    """Run `main(stop)` until it returns; SIGINT/SIGTERM set `stop` for a graceful end."""
    buslog.setup(component)
    log = logging.getLogger(component)
    stopping = False

    async def runner() -> None:
        nonlocal stopping
        tune_gc()
        stop = asyncio.Event()
        task = asyncio.create_task(main(stop), name=f"{component}-main")
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                task.cancel()  # a second signal: stop now
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        stopping = stop.is_set()
        if not task.done():
            await asyncio.wait({task}, timeout=stop_within)
            if not task.done():
                log.warning(
                    "still stopping after %gs (is NATS unreachable?), waiting in %s; exiting without finishing", stop_within, _where(task)
                )
                task.cancel()
                # Whatever it awaits in its finally blocks gets a moment; then we go regardless.
                await asyncio.wait({task}, timeout=0.5)
                if not task.done():
                    return
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    try:
        uvloop.run(runner())
    except KeyboardInterrupt:
        pass
    except DO_NOT_RESTART as exc:
        log.error("%s", exc)
        return EXIT_DO_NOT_RESTART
    except Exception as exc:
        if stopping:
            # A shutdown path that failed (typically: NATS is down). The stop was asked for and
            # the next start recovers from the log; one line, not a traceback wall.
            log.warning("stopped; the shutdown did not finish: %s: %s", type(exc).__name__, exc)
            return EXIT_OK
        # last resort: one clear line, then the traceback for whoever fixes the bug
        log.error("stopped on an unexpected error: %r", exc, exc_info=True)
        return EXIT_FAILED
    return EXIT_OK
