"""The embedded server's settings, port clashes, and config validation as an operator sees it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer, PortInUse, free_port, server_config
from cli.config import Config, ConfigError, load, parse_duration
from cli.up import components

ROOT = Path(__file__).resolve().parent.parent


def test_nats_conf_is_the_rendering_of_the_launcher_defaults() -> None:
    assert (ROOT / "nats.conf").read_text() == server_config()


def test_port_0_renders_as_the_servers_own_choice_and_a_ports_file_reports_it() -> None:
    text = server_config(port=ANY_PORT, monitor_port=ANY_PORT, ports_file_dir="/run/sqt")
    assert "port: -1\n" in text and 'http: "127.0.0.1:-1"' in text and 'ports_file_dir: "/run/sqt"' in text


async def test_a_server_asked_for_port_0_binds_ports_of_its_own_and_keeps_them_when_restarted(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "nats", port=ANY_PORT, monitor_port=ANY_PORT)
    server.start()
    try:
        port, monitor = server.port, server.monitor_port
        assert port != ANY_PORT and monitor != ANY_PORT and port != monitor
        assert server.ready()  # the monitoring port read back is the server's
        nc = await connect(server.url, name="pytest", attempts=3)  # and so is the client port
        await nc.close()
        server.kill()
        server.start()  # clients reconnect to the same URL
        assert (server.port, server.monitor_port) == (port, monitor)
    finally:
        server.stop()


def test_a_port_in_use_names_the_port_and_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EmbeddedServer(store_dir=tmp_path, port=port, monitor_port=free_port())
        with pytest.raises(PortInUse) as err:
            server.start()
    text = str(err.value)
    assert str(port) in text and "--nats-port" in text and "NATS_URL" in text


def test_sqt_up_exits_2_with_the_port_message(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "up", "--nats-port", str(port), "--nats-monitor-port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "SQT_DATA_DIR": str(tmp_path)},
        )
    assert out.returncode == 2
    assert f"port {port}" in out.stderr and "already in use" in out.stderr


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sqt.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[nats]\nport = 'four'\n", ["nats.port", "Expected `int`"]),
        ("[nats]\nport = 70000\n", ["nats.port", "TCP port"]),
        ("[sim]\ntick_ms = 1\n", ["sim.tick_ms", "at least 10"]),
        ("[sim]\nclock = 'sometimes'\n", ["sim.clock", "Invalid enum value"]),
        ("[nats]\nprot = 1\n", ["nats", "unknown field `prot`"]),
        ("[[grids]]\ninstance = 'g'\nlevels = 0\n", ["grids[0].levels", "at least 1"]),
        ("[[grids]]\ninstance = 'g'\nspacing = '-0.1'\n", ["grids[0].spacing", "positive"]),
        ("[[grids]]\ninstance = 'g'\nanchor = '100'\nlower = '110'\n", ["grids[0].anchor", "below `lower`"]),
        ("[[grids]]\ninstance = 'g'\nlevels = 5\nmax_open_orders = 6\n", ["grids[0].max_open_orders", "at least 10"]),
        ("[[grids]]\ninstance = 'g'\n[[grids]]\ninstance = 'g'\n", ["repeated: g"]),
        ("[streams.MARKET]\nmax_age = 'a week'\n", ["streams.MARKET.max_age", "duration"]),
        ("[streams.NOPE]\nmax_age = '1d'\n", ["unknown stream 'NOPE'"]),
        ("this is = not toml = at all", ["not valid TOML"]),
        ("[venues.kraken]\n", ["kraken", "binanceusdm, binance, bitget, okx, bybit, gate"]),
        ("[venues.sim]\n", ["venues.sim", "simulated exchange"]),
        ("[venues.binanceusdm]\napiKey = 'k'\n", ["venues", "unknown field `apiKey`"]),
        ("[[publishers]]\nvenue = 'okx'\nsymbols = ['BTC/USDT:USDT']\n", ["publishers[0].venue", "[venues.okx]"]),
        ("[venues.okx]\n[[publishers]]\nvenue = 'okx'\nsymbols = []\n", ["publishers[0]", "symbols"]),
    ],
)
def test_bad_config_values_name_the_key_and_what_was_expected(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), environ={})
    for fragment in fragments:
        assert fragment in str(err.value)


def test_environment_overrides_the_file_and_is_named_when_wrong(tmp_path: Path) -> None:
    path = write(tmp_path, "[sim]\nseed = 1\n")
    assert load(path, environ={"SQT_SIM_SEED": "9"}).sim.seed == 9
    assert load(path, environ={"SQT_NATS_MONITOR_PORT": "9999"}).nats.monitor_port == 9999
    assert load(path, environ={"SQT_STREAMS_ACCOUNT_MAX_AGE": "400d"}).retention()["ACCOUNT"].max_age == 400 * 86400
    with pytest.raises(ConfigError, match=r"sim.seed \(set by SQT_SIM_SEED\)"):
        load(path, environ={"SQT_SIM_SEED": "nine"})
    with pytest.raises(ConfigError, match="SQT_SIM_SEEDS does not name a config key"):
        load(path, environ={"SQT_SIM_SEEDS": "9"})


def test_venue_keys_in_the_environment_are_never_read_as_config_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[venues.okx]\n")
    secrets = {"SQT_OKX_API_KEY": "Key1x", "SQT_OKX_SECRET": "Sec2x", "SQT_OKX_PASSWORD": "Pw3x", "SQT_OKX_HEDGE_API_KEY": "Key4x"}
    shown = repr(load(path, environ=secrets))  # would raise "does not name a config key" if read
    assert not [v for v in secrets.values() if v in shown]


def test_nats_url_points_everything_at_an_existing_server(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""), environ={"NATS_URL": "nats://10.0.0.1:4222"})
    assert cfg.embedded is False and cfg.nats_url == "nats://10.0.0.1:4222"
    assert load(write(tmp_path, "[nats]\nurl = 'nats://h:1'\n"), environ={}).nats.url == "nats://h:1"


def test_without_a_config_file_sqt_up_runs_the_grid_the_shipped_config_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/sqt.toml here: the built-in defaults
    defaults = load(None, environ={})
    shipped = load(ROOT / "configs" / "sqt.toml", environ={})
    assert defaults.grids == shipped.grids == Config().grids
    grid = defaults.grids[0]
    assert (grid.instance, grid.symbol, grid.mode, grid.levels, str(grid.spacing)) == (
        "btc-neutral",
        "BTC/USDT:USDT",
        "neutral",
        5,
        "0.0005",
    )
    assert (str(grid.notional), grid.trail_levels, grid.max_open_orders, grid.post_only) == ("200", 2, 20, True)
    assert [name for name, _argv, _what in components(defaults, None)] == [
        "sim",
        "executor",
        "risk",
        "reconciler",
        "alerts",
        "archive",
        "gateway",
        "grid:btc-neutral",
    ]


def test_a_config_file_that_sets_grids_to_an_empty_list_runs_no_grid(tmp_path: Path) -> None:
    config = load(write(tmp_path, "grids = []\n"), environ={})
    assert config.grids == []
    assert [name for name, _argv, _what in components(config, None)] == [
        "sim",
        "executor",
        "risk",
        "reconciler",
        "alerts",
        "archive",
        "gateway",
    ]


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load(ROOT / "configs" / "sqt.toml", environ={})
    assert cfg.sim.markets and cfg.grids


def test_the_shipped_paper_config_trades_a_paper_venue_on_a_real_venues_published_data() -> None:
    cfg = load(ROOT / "configs" / "paper.toml", environ={})
    assert (cfg.sim.prices, cfg.sim.paper_venue) == ("paper", "binanceusdm")
    assert [p.venue for p in cfg.publishers] == ["binanceusdm"] and cfg.publishers[0].account is None
    assert {cfg.executor.venue, cfg.reconciler.venue, *(g.venue for g in cfg.grids), *(w.venue for w in cfg.risk.watch)} == {"paper"}
    names = [name for name, _, _ in components(cfg, "configs/paper.toml")]
    assert "publisher:binanceusdm-public" in names and "grid:btc-paper" in names
    from strategies.grid.lattice import client_prefix

    assert cfg.reconciler.client_prefixes == [client_prefix(g.instance) for g in cfg.grids]


def test_a_bad_config_stops_the_cli_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[nats]\nport = 'four'\n")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(path), "status"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert "nats.port" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("text, seconds", [("7d", 604800), ("10m", 600), ("90s", 90), ("1.5h", 5400), ("250ms", 0.25), ("30", 30)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
