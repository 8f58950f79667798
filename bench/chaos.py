"""200 SIGKILLs of the grid, the executor and the simulated exchange, against an uninterrupted run.

    .venv/bin/python bench/chaos.py [--kills 200] [--steps 400] [--seed 11]

Prints how many times each component died, how long both runs took, and whether the killed run
ended exactly where the uninterrupted one did (grid state, fills, position, no client order id
ever placed twice). The test suite runs the same procedure with 24 kills (tests/test_chaos.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import tempfile
import time

import msgspec

from strategies.grid.core import GridCore
from testkit import chaos


def same(a, b) -> bool:
    strip = dict(quiet=None, published_ts=0)
    return msgspec.structs.replace(a, **strip) == msgspec.structs.replace(b, **strip)


async def main(kills: int, steps: int, seed: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        reference = await chaos.run(Path(tmp) / "reference", seed, steps, 0)
        ref_s = time.perf_counter() - started
        started = time.perf_counter()
        dots = []

        def on_kill(step: int, victim: str) -> None:
            dots.append(victim[0])
            if len(dots) % 50 == 0:
                print(f"  {len(dots)} kills ...", flush=True)

        killed = await chaos.run(Path(tmp) / "chaos", seed, steps, kills, on_kill)
        chaos_s = time.perf_counter() - started
    checks = {
        "every kill hit a live process": killed.missed == 0,
        "every kill point did what its pattern says": killed.shown == killed.patterns
        and killed.hits == killed.patterns["one"] + 2 * (killed.patterns["two at once"] + killed.patterns["while recovering"]),
        "no client order id placed twice": all(len(v) == 1 for v in killed.orders_by_cid.values()),
        "grid fills == venue fills": killed.state.fills == killed.venue_fills,
        "grid position == venue position": GridCore.position(killed.state) == killed.venue_position,
        "recovered state == fresh replay of its input": same(killed.state, killed.replayed),
        "state == uninterrupted run": same(killed.state, reference.state),
    }
    print(
        f"bench/chaos.py  seed={seed} steps={steps}  kills={sum(killed.kills.values())} {killed.kills} {killed.patterns}, {killed.mid_tick} mid-tick"
    )
    print(
        f"  uninterrupted run {ref_s:.1f}s, killed run {chaos_s:.1f}s; fills {killed.state.fills}, position {GridCore.position(killed.state)}"
    )
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.kills, a.steps, a.seed)))
