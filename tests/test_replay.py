"""`sqt replay`: a recorded session reproduced offline, from the bus and from an exported file."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.connection import connect
from bus.reader import read_stream
from cli.config import load
from testkit import chaos

ROOT = Path(__file__).resolve().parent.parent


def sqt(cluster: chaos.Cluster, *args: str, bus: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if bus:
        env["NATS_URL"] = cluster.server.url
    else:
        env.pop("NATS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(cluster.config), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_replay_reproduces_the_session_from_any_state_and_from_a_file(tmp_path: Path) -> None:
    with chaos.Cluster(tmp_path, chaos.CONFIG.format(data=tmp_path / "data", seed=3)) as cluster:
        grid = load(cluster.config, environ={}).grid(chaos.INSTANCE)
        for name in chaos.COMPONENTS:
            cluster.start(name)
        nc = await connect(cluster.server.url, attempts=10)
        try:
            await chaos.drive(cluster, nc, grid, steps=80)
            cluster.stop("grid")
            states = []
            async for batch in read_stream(nc, "OPS", subjects=(f"ops.grid.{chaos.INSTANCE}.state",)):
                states += batch
        finally:
            await nc.close()
        assert len(states) > 4

        whole = sqt(cluster, "replay", "grid", "--instance", chaos.INSTANCE, "--since", "1h")
        assert whole.returncode == 0, whole.stderr
        assert "fresh state" in whole.stderr and "match:" in whole.stderr
        decisions = int(whole.stderr.split("match: ")[1].split()[0])
        assert decisions > 5 and len(whole.stdout.splitlines()) == decisions  # one line per decision

        middle = states[len(states) // 2]
        since = dt.datetime.fromtimestamp(middle.ts_ns / 1e9 + 0.0005, dt.timezone.utc).isoformat()
        part = sqt(cluster, "replay", "grid", "--instance", chaos.INSTANCE, "--since", since, "--quiet")
        assert part.returncode == 0, part.stderr
        assert "(recorded state)" in part.stderr and "match:" in part.stderr

        changed = sqt(cluster, "replay", "grid", "--instance", chaos.INSTANCE, "--since", "1h", "--quiet", "--set", "spacing=0.001")
        assert changed.returncode == 1 and "DIFFERENT:" in changed.stderr

        incident = tmp_path / "incident.jsonl"
        exported = sqt(cluster, "replay", "export", "--since", "1h", "-o", str(incident))
        assert exported.returncode == 0, exported.stderr
        cluster.server.stop()  # the file alone must do
        offline = sqt(cluster, "replay", "grid", "--instance", chaos.INSTANCE, "--from-file", str(incident), "--quiet", bus=False)
        assert offline.returncode == 0, offline.stderr
        assert f"match: {decisions} decisions" in offline.stderr
