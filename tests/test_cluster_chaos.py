"""A trading system on a three-node JetStream cluster while its nodes are SIGKILLed, one at a
time, again and again: the simulated exchange, the executor, a grid, the risk monitor and the
archive run as real processes (`sqt run ...`) with every node in their NATS URL, each logged in
as its role; the driver ticks the exchange at a steady pace; a monkey kills a random node,
restarts it, waits until JetStream has a meta leader and every replica is current, and kills
again; every third victim comes back with an empty store (its disk lost) and must get every
stream back from the other two. Then: every stream's sequences contiguous and identical on all three nodes, no client
order id at the exchange twice, every consumer caught up, the archive equal to the streams,
the grid's state equal to a fresh fold of its whole input.

The default run has 40 s of chaos (some four kills); CLUSTER_CHAOS_SECONDS=600 runs
ten minutes of it (bench-like, opt-in).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest

from bus import checkpoints
from bus.auth import CREDENTIALS_ENV
from bus.cluster import placements, wait_all_current
from bus.connection import connect
from bus.streams import BUCKETS, apply
from cli.config import load
from monitors.archive.batch import high_water
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.runner import grid_spec
from strategies.grid.state import GridState
from testkit import chaos
from testkit.archive import ARCHIVED, compare, partial_files
from testkit.bus import eventually
from testkit.cluster import (
    CHAOS_COMPONENTS,
    CHAOS_CONFIG,
    CHAOS_INSTANCE,
    Monkey,
    consumers_caught_up,
    disagreements,
    journal_places,
    local_cluster,
    replica_states,
    tick,
)
from testkit.processes import Components
from venues.errors import Transient
from venues.sim.client import SimVenue

CHAOS_SECONDS = float(os.environ.get("CLUSTER_CHAOS_SECONDS") or 40)
PACE = 0.1  # seconds between two ticks of the exchange


def comparable(state: GridState) -> GridState:
    """The state minus what only says when it was last published or woken."""
    return msgspec.structs.replace(state, quiet=None, published_ts=0)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def stop_gracefully(procs: Components, component: str, timeout: float = 30.0) -> None:
    proc = procs.procs[component]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{component} did not stop within {timeout}s of SIGTERM") from None


@pytest.mark.e2e
@pytest.mark.timeout(300 + 2 * CHAOS_SECONDS)
async def test_nodes_killed_one_at_a_time_under_trading_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with local_cluster(tmp_path) as cluster:
        assert cluster.credentials is not None
        monkeypatch.setenv(CREDENTIALS_ENV, str(cluster.credentials))
        procs = Components(tmp_path, instance=CHAOS_INSTANCE)
        procs.config.write_text(
            CHAOS_CONFIG.format(data=tmp_path / "data", url=cluster.url, credentials=cluster.credentials, seed=7, instance=CHAOS_INSTANCE)
        )
        config = load(procs.config, environ={})
        grid = config.grid(CHAOS_INSTANCE)
        nc = await connect(cluster.url, name="cluster-chaos-driver", attempts=10, role="admin")
        try:
            # What `sqt cluster up` applies: every stream and bucket on all three nodes.
            await apply(nc.jetstream(), config.declared_streams(), BUCKETS)
            assert {p.name: p.size for p in await wait_all_current(nc, 30)} == {
                **{s.name: 3 for s in config.declared_streams()},
                **{f"KV_{b.name}": 3 for b in BUCKETS},
            }
            procs.start(*CHAOS_COMPONENTS)
            venue = SimVenue(nc, timeout=10)
            await chaos.clock(venue)
            await chaos.wait_settled(nc, grid, timeout=120)

            stop_ticking, stop_monkey = asyncio.Event(), asyncio.Event()
            ticking = asyncio.create_task(tick(venue, stop_ticking, PACE))
            monkey = Monkey(cluster, nc, random.Random(11))
            killing = asyncio.create_task(monkey.run(stop_monkey))
            await asyncio.sleep(CHAOS_SECONDS)
            stop_monkey.set()
            await asyncio.wait_for(killing, 180)  # it restarts its last victim and waits for it first
            stop_ticking.set()
            ticks = await asyncio.wait_for(ticking, 60)
            assert all(server.alive for server in cluster.servers.values())
            for name, proc in procs.procs.items():
                assert proc.poll() is None, f"{name} exited with {proc.returncode} under the chaos (see {name}.log)"

            kills, recoveries = monkey.kills, monkey.recoveries
            print(f"\n{len(kills)} kills in {CHAOS_SECONDS:g}s, {ticks} ticks; recovered in {', '.join(f'{r:.1f}s' for r in recoveries)}")
            for k in kills:
                print(f"  {k.at:6.1f}s  {k.node}{' (store wiped)' if k.wiped else ''}  leader of {', '.join(k.led) or 'nothing'}")
            assert len(kills) >= max(3, int(CHAOS_SECONDS / 20)), kills
            assert any(k.led for k in kills), "no kill took a stream's leader"
            assert any(k.wiped for k in kills), "no node came back without its store"

            # Let it settle: tick by tick, each waited out, until three ticks in a row leave every
            # consumer caught up (the grid's input holding what its origins do). The exchange's
            # clock must go on: an order whose outcome an election left unknown is settled by its
            # deadline on that clock (the executor's RetryLater until then).
            await wait_all_current(nc, 60)
            calm, settle_until = 0, loop_time() + 180
            while calm < 3 and loop_time() < settle_until:
                try:
                    await venue.step(1)
                except Transient:  # the exchange rebuilding its session: in a moment
                    await asyncio.sleep(0.2)
                    continue
                try:
                    await chaos.wait_settled(nc, grid, timeout=0.5 if calm == 0 else 10)
                    calm += 1
                except TimeoutError:
                    calm = 0
            assert calm == 3, "the system did not settle"
            floors = await consumers_caught_up(nc, timeout=120)
            assert f"COMMAND/executor-{grid.venue}-{grid.account}" in floors and f"{grid_stream(grid)}/grid-{CHAOS_INSTANCE}" in floors

            # The grid: stopped gracefully (its final checkpoint), its state a fresh fold of its input.
            stop_gracefully(procs, "grid")
            cp = await checkpoints.load(nc, f"grid-{CHAOS_INSTANCE}", GridState)
            assert cp is not None
            replayed = await chaos.replay_all(nc, grid, cp.state)
            assert comparable(cp.state) == comparable(replayed)
            assert cp.state.fills > 0, "the grid must trade for the comparison to mean anything"
            # The exchange: each client order id one order, journaled once; the grid's fills,
            # position and open orders are the exchange's.
            facts = chaos.Outcome(state=cp.state, replayed=replayed)
            await chaos.venue_facts(nc, SimVenue(nc, timeout=10), facts)
            assert facts.orders_by_cid and all(len(ids) == 1 for ids in facts.orders_by_cid.values())
            places = await journal_places(nc)
            assert places and len(places) == len(set(places)), "a client order id was journaled twice"
            assert cp.state.fills == facts.venue_fills
            assert GridCore.position(cp.state) == facts.venue_position
            assert {s.client_order_id for s in cp.state.slots if s.client_order_id} == facts.venue_open

            # Nothing publishes any more: the archive catches up and equals the streams.
            for component in ("risk", "executor", "sim"):
                stop_gracefully(procs, component)
            js = nc.jetstream()
            root = tmp_path / "data" / "archive"
            last = {s: (await js.stream_info(s)).state.last_seq for s in ARCHIVED}

            async def archived() -> bool:
                return {s: high_water(p.name for p in (root / s).glob("date=*/*.parquet")) for s in ARCHIVED} == last

            await eventually(archived, 90, 0.2, f"the archive to reach {last}")
            assert not partial_files(root)
            for stream in ARCHIVED:
                c = await compare(nc, root, stream)
                assert c.equal, str(c)
            stop_gracefully(procs, "archive")

            # Node by node, from each one's own store: every stream identical on the three, and
            # its sequences contiguous (nothing deleted; a bucket keeps only its history).
            async def agree() -> bool:
                return not await asyncio.to_thread(disagreements, cluster)

            await eventually(agree, 60, 0.2, "the replicas to agree")
            states = replica_states(cluster)
            assert {grid_stream(grid), "VENUE_SIM", "ACCOUNT", "COMMAND", "KV_checkpoints"} <= set(states), sorted(states)
            for name, views in states.items():
                s = views[0]
                if not name.startswith("KV_") and s["messages"]:
                    assert not s.get("num_deleted") and s["messages"] == s["last_seq"] - s["first_seq"] + 1, (name, s)
            assert all(p.size == 3 for p in await placements(nc)), "a stream with fewer than three replicas"
        finally:
            procs.stop()
            await nc.close()


def grid_stream(grid: GridConfig) -> str:
    return grid_spec(grid).stream
