"""Components as real processes (`sqt run ...`) on one config file, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without `SQT_*` variables (each is read as a config key), plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SQT_")} | (extra or {})


class Components:
    def __init__(self, workdir: Path, instance: str = "e2e") -> None:
        self.workdir = workdir
        self.config = workdir / "sqt.toml"
        self.instance = instance  # a grid's or an arbitrage's, for `run grid` and `run arbitrage`
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *components: str, secrets: dict[str, str] | None = None) -> None:
        """Start each component, its output in <workdir>/<component>.log (a `/` in a name is a `-` there)."""
        for component in components:
            # `sim:sim2` is `run sim --venue sim2`; `executor:sim2-arb` is `run executor --venue sim2 --account arb`.
            kind, _, which = component.partition(":")
            argv = [sys.executable, "-m", "cli.main", "--config", str(self.config), "run", kind]
            argv += ["--instance", self.instance] if kind in ("grid", "arbitrage") else []
            if kind == "grids":  # `grids:0/2` is `run grids --shard 0/2`
                argv += ["--shard", which or "0/1"]
            elif which:
                venue, _, account = which.partition("-")
                argv += ["--venue", venue] + (["--account", account] if account else [])
            with open(self.workdir / f"{component.replace('/', '-')}.log", "ab") as out:
                self.procs[component] = subprocess.Popen(argv, cwd=ROOT, env=clean_env(secrets), stdout=out, stderr=subprocess.STDOUT)

    def sqt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An `sqt` command on the same config, to completion."""
        argv = [sys.executable, "-m", "cli.main", "--config", str(self.config), *args]
        return subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120)

    def signal(self, component: str, sig: signal.Signals) -> None:
        self.procs[component].send_signal(sig)

    def kill(self, component: str) -> None:
        proc = self.procs.get(component)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process dies only once continued
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for component in list(self.procs):
            self.kill(component)
