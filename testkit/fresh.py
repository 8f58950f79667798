"""The other side of a determinism test, in a fresh process with another hash seed.

Two runs in one process share a hash seed, the caches of every `lru_cache` and every module's
state, so a dependence on set or dict order, on identity or on anything global can hide there.
`digest_elsewhere(kind, job)` runs the same job in a new interpreter (`python -m testkit.fresh`)
with a different PYTHONHASHSEED and returns its digest, for comparison with `digest(kind, job)`
computed here.

Jobs: `grid` — a grid session against the simulated exchange's engine (`testkit.grid.Harness`)
over a price path; `sim` — a journal of entries folded through the engine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from bus.contract import Inbound
from strategies.grid.config import GridConfig
from testkit.grid import Harness, drive, sim_config
from venues.sim.config import SimConfig
from venues.sim.engine import SimEngine, state_digest
from venues.sim.journal import Entry

ROOT = Path(__file__).resolve().parent.parent


class GridJob(msgspec.Struct, frozen=True):
    grid: GridConfig
    path: list[tuple[float, float]]
    latency: bool = False


class SimJob(msgspec.Struct, frozen=True):
    config: SimConfig
    entries: list[Entry]


def digest(kind: str, job: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    if kind == "grid":
        g = msgspec.json.decode(job, type=GridJob)
        harness = Harness(g.grid, sim_config(), latency=g.latency)
        drive(harness, g.path, aim=False)
        h.update(msgspec.json.encode(harness.gst))
        h.update(msgspec.json.encode([p.id for p in harness.placed] + [c.id for c in harness.canceled]))
    elif kind == "sim":
        s = msgspec.json.decode(job, type=SimJob)
        engine = SimEngine(s.config)
        state = engine.initial_state()
        for seq, entry in enumerate(s.entries, start=1):
            state, events = engine.step(state, Inbound(seq, "journal", entry))
            h.update(msgspec.json.encode(events))
        h.update(state_digest(state).encode())
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return h.hexdigest()


def grid_job(grid: GridConfig, path: list[tuple[float, float]], latency: bool = False) -> bytes:
    return msgspec.json.encode(GridJob(grid, path, latency))


def sim_job(config: SimConfig, entries: list[Any]) -> bytes:
    return msgspec.json.encode(SimJob(config, entries))


def digest_elsewhere(kind: str, job: bytes) -> str:
    here = os.environ.get("PYTHONHASHSEED", "")
    env = dict(os.environ, PYTHONHASHSEED="12345" if here != "12345" else "54321")
    done = subprocess.run(
        [sys.executable, "-m", "testkit.fresh", kind], input=job, capture_output=True, cwd=ROOT, env=env, timeout=300, check=True
    )
    return done.stdout.decode().strip()


if __name__ == "__main__":
    print(digest(sys.argv[1], sys.stdin.buffer.read()))
    sys.exit(0)
