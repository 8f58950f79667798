"""A three-node JetStream cluster (bus/cluster.py): its configs, and a stream leader SIGKILLed
in the middle of a burst of publishes while a consumer reads: nothing lost, nothing twice, and
the three replicas end identical, node by node."""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus import streams
from bus.cluster import placements, rendered_configs, stream_states, wait_all_current
from bus.connection import connect
from bus.embedded import ROUTE_PASSWORD, SYS_PASSWORD
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.runtime import ConsumerRuntime
from testkit.bus import eventually
from testkit.cluster import disagreements, local_cluster
from testkit.cores import SumCore, fold_all, sum_spec
from testkit.events import ticker

ROOT = Path(__file__).resolve().parent.parent
TICKERS = 3_000
CHUNK = 50  # publishes in flight at once


def test_configs_cluster_is_the_rendering_and_names_no_password() -> None:
    rendered = rendered_configs()
    assert sorted(p.name for p in (ROOT / "configs" / "cluster").glob("*.conf")) == sorted(rendered)
    for name, text in rendered.items():
        assert (ROOT / "configs" / "cluster" / name).read_text() == text, (
            f"configs/cluster/{name} is stale: .venv/bin/python -c 'from bus.cluster import write_configs; write_configs()'"
        )
    one = rendered["node-1.conf"]
    assert "server_name: n1" in one and "port: 4222" in one and '"127.0.0.1:6222"' in one and 'store_dir: "data/cluster/n1"' in one
    # The routes and the system user's password are variables; the routes' URLs come whole
    # from the environment (a variable inside a string is not interpolated).
    assert "$SQT_NATS_ROUTE_N2" in one and "$SQT_NATS_ROUTE_N3" in one and "$SQT_NATS_ROUTE_N1" not in one
    assert f"${ROUTE_PASSWORD}" in one and f"${SYS_PASSWORD}" in one and "system_account: SYS" in one


async def _leader(nc: Client, stream: str) -> str:
    return next(p.leader for p in await placements(nc, [stream]))


@pytest.mark.timeout(120)
async def test_the_leader_killed_mid_burst_loses_nothing_duplicates_nothing_and_replicas_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_cluster(tmp_path) as cluster:
        assert cluster.credentials is not None
        monkeypatch.setenv("SQT_NATS_CREDENTIALS", str(cluster.credentials))
        nc = await connect(cluster.url, name="pytest-publisher", attempts=5, role="admin")
        reader = await connect(cluster.url, name="pytest-consumer", attempts=5, role="admin")
        stop = asyncio.Event()
        try:
            # Declarations say AUTO: on three nodes, three replicas each, every one current.
            changes = await streams.apply(nc.jetstream())
            assert all(c.kind == "created" for c in changes), changes
            found = await wait_all_current(nc, timeout=30)
            assert {p.name: p.size for p in found} == {n: 3 for n in ("MARKET", "ACCOUNT", "COMMAND", "OPS", "DLQ")} | {
                f"KV_{b.name}": 3 for b in streams.BUCKETS
            }

            runtime = ConsumerRuntime(reader, sum_spec(checkpoint_every=300, checkpoint_interval=0.2, batch=64), SumCore())
            consuming = asyncio.create_task(runtime.run(stop))
            publisher = await Publisher(nc).start()
            prices = [Decimal(100 + i % 7) for i in range(1, TICKERS + 1)]
            kills: list[str] = []
            for start in range(0, TICKERS, CHUNK):
                if start == TICKERS // 4:
                    # The stream's leader, wherever the publisher is connected.
                    kills.append(await _leader(nc, "MARKET"))
                    cluster.kill(kills[-1])
                elif start == TICKERS // 2:
                    cluster.restart(kills[-1])
                    await wait_all_current(nc, timeout=60)
                    # The node the publisher is connected to: its acks in flight die with it.
                    kills.append(str(nc._server_info["server_name"]))
                    cluster.kill(kills[-1])
                elif start == 3 * TICKERS // 4:
                    cluster.restart(kills[-1])
                futures = [
                    await publisher.send_message(ticker(str(p), ts=start + i + 1)) for i, p in enumerate(prices[start : start + CHUNK])
                ]
                await asyncio.gather(*futures)  # raises if one message failed for good
            assert len(kills) == 2

            await wait_all_current(nc, timeout=60)
            await eventually(lambda: runtime.seq >= TICKERS, 60, 0.1, "the consumer to catch up")
            # Exactly once, in order: sequences 1..N, each ticker's id once.
            stored = [m async for batch in read_stream(nc, "MARKET") for m in batch]
            assert [m.seq for m in stored] == list(range(1, TICKERS + 1))
            assert [m.header("Nats-Msg-Id") for m in stored] == [ticker("1", ts=i).id for i in range(1, TICKERS + 1)]
            # The consumer folded each input once (its state is the plain fold), and its
            # outputs, every 10th input's alert, are stored once each.
            assert runtime.state == fold_all(prices)
            alerts = [m.header("Nats-Msg-Id") async for batch in read_stream(nc, "OPS") for m in batch]
            assert sorted(alerts) == sorted(f"sum:{n}" for n in range(10, TICKERS + 1, 10))
            # Node by node, from each one's own store: the three replicas are identical.
            await eventually(
                lambda: asyncio.to_thread(lambda: not disagreements(cluster).keys() & {"MARKET", "OPS"}), 30, 0.1, "the replicas to agree"
            )
            views = [stream_states(node) for node in cluster.live_nodes()]
            assert len(views) == 3 and all(v["MARKET"]["last_seq"] == TICKERS for v in views)
        finally:
            stop.set()
            if "consuming" in locals():
                await asyncio.wait_for(consuming, 30)
            await reader.close()
            await nc.close()


def test_the_test_cluster_is_on_loopback_with_users_on(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        assert cluster.credentials is not None and os.stat(cluster.credentials).st_mode & 0o077 == 0
        assert all(n.host == "127.0.0.1" for n in cluster.live_nodes())
        assert len(cluster.url.split(",")) == 3


def test_sqt_streams_apply_gives_three_replicas_and_sqt_cluster_reports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bus.auth import read_credentials
    from cli.main import main

    monkeypatch.setenv("SQT_LOG_FORMAT", "text")
    with local_cluster(tmp_path / "cluster") as cluster:
        assert cluster.credentials is not None
        monkeypatch.setenv("SQT_NATS_CREDENTIALS", str(cluster.credentials))
        config = tmp_path / "sqt.toml"
        config.write_text(f'data_dir = "{tmp_path / "data"}"\n[nats]\nurl = "{cluster.url}"\n')
        # The admin's `sqt streams apply`, as it is: AUTO replicas are one per node.
        assert main(["--config", str(config), "streams", "apply"]) == 0
        capsys.readouterr()
        monitors = ",".join(n.monitor_url for n in cluster.live_nodes())
        assert main(["--config", str(config), "cluster", "status", "--monitor", monitors]) == 0
        out = capsys.readouterr().out
        assert all(f"\n{n} " in out for n in ("n1", "n2", "n3")), out
        market = next(line for line in out.splitlines() if line.startswith("MARKET "))
        assert market.split()[2] == "3" and market.count("(current)") == 2, market
        assert main(["--config", str(config), "cluster", "peer-remove", "n9"]) == 1
        assert "not a member" in capsys.readouterr().err
    fresh = tmp_path / "fresh" / "nats-auth.env"
    monkeypatch.setenv("SQT_NATS_CREDENTIALS", str(fresh))
    assert main(["--config", str(config), "cluster", "init"]) == 0
    assert {ROUTE_PASSWORD, SYS_PASSWORD} <= set(read_credentials(fresh))


def test_replicas_are_one_per_node_and_never_more_than_the_nodes() -> None:
    """A config written for the cluster (`[streams.MARKET] replicas = 3`) also runs on one server."""
    from bus.streams import AUTO, _replicas

    assert _replicas("MARKET", AUTO, 3) == 3 and _replicas("MARKET", AUTO, 1) == 1
    assert _replicas("MARKET", 3, 1) == 1 and _replicas("MARKET", 2, 3) == 2
