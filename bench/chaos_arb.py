"""100 SIGKILLs of the funding arbitrage, the executor and the simulated exchange while sagas run.

    .venv/bin/python bench/chaos_arb.py [--kills 100] [--seed 11]

The funding swings between paying, nothing and receiving every few seconds, so entries, hedges,
exits and margin shorts are in flight when the kills land (testkit/chaos_arb.py). Prints how many
times each component died, how many sagas ran, the longest unhedged span, and whether the run
ended flat, equal to the exchange, with no client order id placed twice and a recovered state
equal to a fresh fold of the whole input. tests/test_chaos_arbitrage.py runs it with 12 kills.
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

from testkit import chaos_arb


async def main(kills: int, seed: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = await chaos_arb.run(Path(tmp), seed, kills)
        took = time.perf_counter() - started
    st = run.state
    twice = sum(1 for ids in run.orders_by_cid.values() if len(ids) > 1)
    longest = max((b - a for a, b in run.naked), default=0)
    same = msgspec.structs.replace(st, published_ts=0) == msgspec.structs.replace(run.replayed, published_ts=0)
    flat = chaos_arb.flat(st) and (run.venue_spot, run.venue_perp) == chaos_arb.held(st) and run.venue_perp == 0
    print(f"kills: {sum(run.kills.values())} ({', '.join(f'{k} {v}' for k, v in run.kills.items())}) in {took:.0f} s")
    print(
        f"sagas: {st.entries} entries, {st.exits} exits, {len(st.unwinds)} unwinds in the last hour; {run.places} places, {st.fills} fills"
    )
    print(f"funding swings: {run.swings}; books: funding {st.total.funding}, fees {st.total.fees}, borrow {st.total.borrow}")
    print(f"client order ids placed twice: {twice}")
    print(f"unhedged spans: {len(run.naked)}, longest {longest} ms (limit {chaos_arb.NAKED_MS} ms plus restarts)")
    print(f"ended flat and equal to the exchange: {flat}; recovered state equals a fresh fold of its input: {same}")
    if not same:  # say where, so that the difference can be chased
        live, fold = msgspec.to_builtins(st), msgspec.to_builtins(run.replayed)
        for key in live:
            if key != "published_ts" and live[key] != fold.get(key):
                print(f"  differs: {key}\n    live: {str(live[key])[:600]}\n    fold: {str(fold.get(key))[:600]}")
    return 0 if twice == 0 and flat and same else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.kills, a.seed)))
