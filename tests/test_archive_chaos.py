"""`sqt run archive` as a real process, killed with SIGKILL again and again while a publisher
keeps writing to every stream (some kills while a commit is on disk half done); restarted each
time. At the end the archive equals the streams message by message: no row twice, none lost,
no partial file under a `.parquet` name. A `sqt query` during the run reads the files."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monitors.archive.batch import high_water
from testkit.archive import ARCHIVED, compare, mixed, partial_files, publish
from testkit.bus import eventually, start_server
from testkit.processes import ROOT, clean_env

CONFIG = """
data_dir = "{data}"
log_level = "INFO"

[nats]
url = "{url}"

[archive]
batch_size = 150
flush_seconds = 0.2
metrics_port = 0
"""
KILLS = 10


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "cli.main", "--config", str(config), "run", "archive"]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)


def committing(root: Path) -> bool:
    """A commit is on disk half done: a temp file or a manifest exists."""
    return any(root.glob("*/date=*/.*.tmp")) or any(root.glob("*/.commit*"))


def marks(root: Path) -> dict[str, int]:
    return {s: high_water(p.name for p in (root / s).glob("date=*/*.parquet")) for s in ARCHIVED}


@pytest.mark.e2e
async def test_sigkill_at_any_moment_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    from bus import streams
    from bus.connection import connect

    nc = await connect(server.url, name="chaos-archive")
    proc: subprocess.Popen[bytes] | None = None
    try:
        await streams.apply(nc.jetstream())
        data = tmp_path / "data"
        root = data / "archive"
        config = tmp_path / "sqt.toml"
        config.write_text(CONFIG.format(data=data, url=server.url))
        log = tmp_path / "archive.log"
        rng = random.Random(13)
        stop_publishing = asyncio.Event()
        published = 0

        async def publisher() -> None:
            nonlocal published
            while not stop_publishing.is_set():
                await publish(nc, mixed(200, seed=published, start=published))
                published += 200
                await asyncio.sleep(0.02)  # pacing the load, not waiting for a condition

        pub = asyncio.create_task(publisher())
        proc = start(config, log)
        kills = mid_commit = 0
        queried = None
        try:
            while kills < KILLS:
                # Wait until this process has committed something (so each life does work) ...
                before = sum(marks(root).values()) if root.exists() else 0

                def progressed(before: int = before) -> bool:
                    return root.exists() and sum(marks(root).values()) > before

                await eventually(progressed, timeout=30, what="a commit")
                # ... then kill it: half the time the moment a commit is on disk half done.
                if kills % 2 == 0:
                    try:
                        await eventually(lambda: committing(root), timeout=5, interval=0.001, what="a commit in progress")
                    except AssertionError:
                        pass
                else:
                    await asyncio.sleep(rng.uniform(0.0, 0.5))  # a random instant
                mid_commit += committing(root)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                if kills == KILLS // 2:
                    # A reader during the busy run: `sqt query` over the files being written.
                    argv = [sys.executable, "-m", "cli.main", "--config", str(config), "query", "--csv", "SELECT count(*) AS n FROM events"]
                    queried = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
                proc = start(config, log)
        finally:
            stop_publishing.set()
            await pub
        assert queried is not None and queried.returncode == 0, queried.stderr if queried else None
        assert int(queried.stdout.splitlines()[1]) > 0
        assert mid_commit > 0, "no kill landed while a commit was half done"
        js = nc.jetstream()
        last = {s: (await js.stream_info(s)).state.last_seq for s in ARCHIVED}
        await eventually(lambda: marks(root) == last, timeout=60, what=f"the restarted archive to catch up with {last}")
        assert not partial_files(root)
        for stream in ARCHIVED:
            c = await compare(nc, root, stream)
            assert c.equal, str(c)
        assert published >= 2_000
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await nc.close()
        server.stop()
