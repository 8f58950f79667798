"""The configuration: one TOML file, `SQT_*` environment overrides, validated on load.

    sqt --config configs/sqt.toml ...     (or SQT_CONFIG=...; default configs/sqt.toml if present)
    SQT_NATS_PORT=4333 SQT_SIM_SEED=7 sqt up
    NATS_URL=nats://host:4222 sqt up      (use a running server instead of the embedded one)

A bad value stops the program with exit code 2 and names the key and what was expected.
Secrets never live here: venue API keys come from the environment only.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from bus.auth import CREDENTIALS_ENV
from bus.embedded import DEFAULT_MONITOR_PORT, DEFAULT_PORT
from bus.log import log_format
from bus.secrets import is_secret_variable
from bus.settings import BusSettings
from bus.streams import STREAMS, Retention, StreamSpec, with_retention
from executors.config import ExecutorConfig
from gateway.config import GatewayConfig
from monitors.alerts.config import AlertsConfig
from monitors.archive.config import ArchiveConfig
from monitors.funding.config import FundingConfig
from monitors.reconciler.config import ReconcilerConfig
from monitors.risk.config import RiskConfig
from orchestration.config import HostingConfig
from publishers.ccxt.config import PublisherConfig
from strategies.arbitrage.config import ArbConfig, ArbLeg
from strategies.grid.config import GridConfig
from venues.ccxt.config import CcxtVenueConfig
from venues.sim.config import SimConfig

DEFAULT_FILE = Path("configs/sqt.toml")


class ConfigError(Exception):
    """A config problem, phrased for the operator (names the key, says what was expected)."""


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str | None = None  # None: start the embedded server (NATS_URL overrides)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    monitor_port: int = DEFAULT_MONITOR_PORT
    # One user per role with only its rights (bus/auth.py); false lets any client do anything.
    auth: bool = True
    credentials: str | None = None  # the passwords' file; default <data_dir>/nats-auth.env

    def __post_init__(self) -> None:
        for name in ("port", "monitor_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"`{name}` must be a TCP port (1-65535)")


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_age: str | None = None  # "7d", "12h", "30m", "0" = unlimited
    duplicate_window: str | None = None
    max_bytes: int | None = None
    replicas: int | None = None


def default_grids() -> list[GridConfig]:
    """The grid `sqt up` runs without a config file: the one configs/sqt.toml declares, so
    `sqt up` anywhere trades like `make up`. A file with `grids = []` runs none."""
    return [
        GridConfig(
            instance="btc-neutral",
            venue="sim",
            account="main",
            symbol="BTC/USDT:USDT",
            mode="neutral",
            levels=5,
            spacing=Decimal("0.0005"),
            notional=Decimal(200),
            trail_levels=2,
            max_open_orders=20,
            post_only=True,
            metrics_port=9110,
        )
    ]


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "data"
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line (bus/log.py)
    nats: NatsSettings = NatsSettings()
    streams: dict[str, StreamSettings] = msgspec.field(default_factory=dict)
    sim: SimConfig = SimConfig()
    executor: ExecutorConfig = ExecutorConfig()
    gateway: GatewayConfig = GatewayConfig()
    alerts: AlertsConfig = AlertsConfig()
    risk: RiskConfig = RiskConfig()
    reconciler: ReconcilerConfig = ReconcilerConfig()
    venues: dict[str, CcxtVenueConfig] = msgspec.field(default_factory=dict)  # real venues through ccxt
    publishers: list[PublisherConfig] = msgspec.field(default_factory=list)  # their data onto the bus
    grids: list[GridConfig] = msgspec.field(default_factory=default_grids)
    sims: list[SimConfig] = msgspec.field(default_factory=list)  # more simulated venues beside `sim` (e.g. sim2)
    executors: list[ExecutorConfig] = msgspec.field(default_factory=list)  # more (venue, account)s beside `executor`
    funding: FundingConfig = FundingConfig()  # the funding monitor and its pairs
    arbitrages: list[ArbConfig] = msgspec.field(default_factory=list)  # funding arbitrage instances, one pair each
    archive: ArchiveConfig = ArchiveConfig()  # every stream into Parquet files (`sqt run archive`, `sqt query`)
    hosting: HostingConfig = HostingConfig()  # grid instances per process (`sqt run grids --shard`)

    def __post_init__(self) -> None:
        known = {s.name for s in STREAMS}
        for name in self.streams:
            if name not in known:
                raise ValueError(f"unknown stream {name!r} in `streams` (known: {', '.join(sorted(known))})")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("`log_level` must be DEBUG, INFO, WARNING or ERROR")
        log_format(self.log_format)  # ValueError naming `log_format` and what it may be
        for name in self.venues:
            if name == self.sim.venue:
                raise ValueError(f"`venues.{name}`: {name!r} is the simulated exchange's name (`sim.venue`); pick another")
            if not re.fullmatch(r"[a-z0-9_-]+", name):
                raise ValueError(f"`venues.{name}`: a venue name is lowercase letters, digits, - and _")
            self.venues[name].exchange_id(name)  # names the supported exchanges if it is none of them
        for i, pub in enumerate(self.publishers):
            if pub.venue not in self.venues:
                raise ValueError(f"`publishers[{i}].venue` {pub.venue!r} has no [venues.{pub.venue}] section")
        names = [p.name for p in self.publishers]
        if len(set(names)) != len(names):
            raise ValueError("two `publishers` publish the same venue and account: give each its own `instance`")
        ids = [g.instance for g in self.grids]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"grid instance ids must be unique; repeated: {', '.join(dupes)}")
        self._check_venues_and_arbitrages()

    def _check_venues_and_arbitrages(self) -> None:
        sims = [self.sim.venue] + [s.venue for s in self.sims]
        if len(set(sims)) != len(sims):
            raise ValueError(f"`sims`: every simulated venue needs its own `venue` name (have {', '.join(sims)})")
        for i, sim in enumerate(self.sims):
            if sim.venue in self.venues:
                raise ValueError(f"`sims[{i}].venue` {sim.venue!r} is also a [venues.{sim.venue}] section")
        served = [(self.executor.venue, self.executor.account)] + [(e.venue, e.account) for e in self.executors]
        if len(set(served)) != len(served):
            raise ValueError("`executors`: two executors serve the same venue and account")
        grids = {g.instance for g in self.grids}
        seen: set[str] = set()
        for i, arb in enumerate(self.arbitrages):
            if arb.instance in seen or arb.instance in grids:
                raise ValueError(f"`arbitrages[{i}].instance` {arb.instance!r} is used by another grid or arbitrage")
            seen.add(arb.instance)
            if arb.pair not in {p.name for p in self.funding.pairs}:
                known = ", ".join(p.name for p in self.funding.pairs) or "none configured"
                raise ValueError(f"`arbitrages[{i}].pair` {arb.pair!r} is not a [[funding.pairs]] name (known: {known})")
            if arb.monitor != self.funding.instance:
                raise ValueError(f"`arbitrages[{i}].monitor` {arb.monitor!r}: the funding monitor here is {self.funding.instance!r}")

    @property
    def nats_url(self) -> str:
        return self.nats.url or f"nats://{self.nats.host}:{self.nats.port}"

    @property
    def embedded(self) -> bool:
        return not self.nats.url

    @property
    def credentials_path(self) -> Path:
        """The NATS passwords' file (`nats.credentials`; SQT_NATS_CREDENTIALS wins, bus/auth.py)."""
        return Path(os.environ.get(CREDENTIALS_ENV) or self.nats.credentials or Path(self.data_dir) / "nats-auth.env")

    def bus(self) -> BusSettings:
        """What the component runners need of this configuration."""
        return BusSettings(
            nats_url=self.nats_url,
            retention=self.retention(),
            sim_venue=self.sim.venue,
            venues=self.venues,
            sim_venues=tuple(s.venue for s in self.sims),
        )

    def declared_streams(self) -> tuple[StreamSpec, ...]:
        """Every stream the admin declares (a component's own user may not create streams,
        docs/adr/0026): the bus's, with the operator's retention; each simulated exchange's
        journal; and the input stream of every configured monitor, arbitrage and grid (the
        registry's grids: orchestration/provision.py)."""
        from monitors.alerts.consumer import input_stream as alerts_input
        from monitors.funding.runner import input_stream as funding_input
        from monitors.risk.runner import input_stream as risk_input
        from strategies.arbitrage.runner import input_stream as arbitrage_input
        from strategies.grid.runner import input_stream as grid_input
        from venues.sim.journal import journal_stream

        venues = [self.sim.venue] + [s.venue for s in self.sims]
        inputs = [risk_input(self.risk), funding_input(self.funding), alerts_input(self.alerts)]
        inputs += [arbitrage_input(self.arbitrage(a.instance)) for a in self.arbitrages]
        inputs += [grid_input(g) for g in self.grids]
        return with_retention(STREAMS, self.retention()) + tuple(journal_stream(v) for v in venues) + tuple(inputs)

    def retention(self) -> dict[str, Retention]:
        out = {}
        for name, s in self.streams.items():
            out[name] = Retention(
                max_age=parse_duration(s.max_age, f"streams.{name}.max_age") if s.max_age is not None else None,
                duplicate_window=parse_duration(s.duplicate_window, f"streams.{name}.duplicate_window")
                if s.duplicate_window is not None
                else None,
                max_bytes=s.max_bytes,
                replicas=s.replicas,
            )
        return out

    def publisher(self, venue: str, account: str | None, symbols: list[str] | None) -> tuple[PublisherConfig, CcxtVenueConfig]:
        """The publisher `sqt run publisher` runs: the configured one for the venue (and account),
        its symbols replaced by `symbols` if given; or, for a venue without one, a public-data
        publisher of `symbols` (a venue ccxt supports needs no [venues.*] section for that)."""
        found = [p for p in self.publishers if p.venue == venue and (account is None or p.account == account)]
        if len(found) > 1:
            raise ConfigError(f"several publishers for {venue}: name one with --account ({', '.join(str(p.account) for p in found)})")
        try:
            if found:
                pub = msgspec.structs.replace(found[0], symbols=symbols) if symbols else found[0]
            else:
                if not symbols:
                    raise ConfigError(f"no [[publishers]] for venue {venue!r}: pass --symbols (e.g. BTC/USDT:USDT)")
                pub = PublisherConfig(venue=venue, account=account, symbols=symbols)
            venue_cfg = self.venues.get(venue, CcxtVenueConfig())
            venue_cfg.exchange_id(venue)
        except (ValueError, msgspec.ValidationError) as exc:
            raise ConfigError(f"publisher: {exc}") from None
        return pub, venue_cfg

    def archive_dir(self) -> Path:
        """Where the archive's Parquet files are (`archive.directory`, or `<data_dir>/archive`)."""
        return self.archive.root(self.data_dir)

    def simulated(self, venue: str | None) -> SimConfig:
        """The simulated venue `sqt run sim --venue` runs (the `[sim]` one by default)."""
        for sim in [self.sim, *self.sims]:
            if venue is None or sim.venue == venue:
                return sim
        known = ", ".join([self.sim.venue] + [s.venue for s in self.sims])
        raise ConfigError(f"no simulated venue {venue!r} (configured: {known}; add a [[sims]] table)")

    def executor_for(self, venue: str | None, account: str | None) -> ExecutorConfig:
        """The executor `sqt run executor --venue --account` runs (the `[executor]` one by default)."""
        for ex in [self.executor, *self.executors]:
            if (venue is None or ex.venue == venue) and (account is None or ex.account == account):
                return ex
        known = ", ".join(f"{e.venue}/{e.account}" for e in [self.executor, *self.executors])
        raise ConfigError(f"no executor for {venue or '*'}/{account or '*'} (configured: {known}; add an [[executors]] table)")

    def arbitrage(self, instance: str | None) -> ArbConfig:
        """An arbitrage instance with its legs filled from its funding pair."""
        if instance is None:
            if len(self.arbitrages) != 1:
                known = ", ".join(a.instance for a in self.arbitrages) or "none configured"
                raise ConfigError(f"`sqt run arbitrage` needs --instance (configured: {known})")
            instance = self.arbitrages[0].instance
        for arb in self.arbitrages:
            if arb.instance == instance:
                pair = self.funding.pair(arb.pair)
                return msgspec.structs.replace(arb, legs=[ArbLeg(venue=leg.venue, symbol=leg.symbol) for leg in pair.legs])
        known = ", ".join(a.instance for a in self.arbitrages) or "none configured"
        raise ConfigError(f"no arbitrage instance {instance!r} in the config (known: {known})")

    def grid(self, instance: str) -> GridConfig:
        for g in self.grids:
            if g.instance == instance:
                return g
        known = ", ".join(g.instance for g in self.grids) or "none configured"
        raise ConfigError(f"no grid instance {instance!r} in the config (known: {known})")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, key: str = "duration") -> float:
    """'7d' -> 604800.0; '90s', '10m', '1.5h', '250ms'; a bare number is seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{key}: expected a duration like 30s, 10m, 12h or 7d, got {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def env_overrides(raw: dict[str, Any], environ: dict[str, str], origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply SQT_<SECTION>_<KEY>=value (and SQT_<KEY> for top-level keys) onto the raw table.

    `origin` collects which variable set which key, so an error can name the variable.
    """
    origin = {} if origin is None else origin
    fields = {f.name: f.type for f in msgspec.structs.fields(Config)}
    struct_sections = {
        "nats": NatsSettings,
        "sim": SimConfig,
        "executor": ExecutorConfig,
        "gateway": GatewayConfig,
        "alerts": AlertsConfig,
        "reconciler": ReconcilerConfig,
        "funding": FundingConfig,
        "archive": ArchiveConfig,
    }
    if environ.get("NATS_URL"):
        raw.setdefault("nats", {})["url"] = environ["NATS_URL"]
        origin["nats.url"] = "NATS_URL"
    for var, value in sorted(environ.items()):
        # SQT_NATS_USER goes with its password to the NATS client (bus/auth.py), SQT_METRICS_HOST
        # to every component's /metrics (bus/http.py): the process's, not the config's.
        if (
            not var.startswith("SQT_")
            or var in ("SQT_CONFIG", "SQT_LOG_LEVEL", "SQT_LOG_FORMAT", "SQT_NATS_USER", "SQT_METRICS_HOST")
            or is_secret_variable(var)
        ):
            if var in ("SQT_LOG_LEVEL", "SQT_LOG_FORMAT"):
                raw[var[4:].lower()] = value
                origin[var[4:].lower()] = var
            continue
        path = var[4:].lower()
        placed = False
        for section, struct in struct_sections.items():
            prefix = section + "_"
            if path.startswith(prefix) and path[len(prefix) :] in struct.__struct_fields__:
                raw.setdefault(section, {})[path[len(prefix) :]] = value
                origin[f"{section}.{path[len(prefix) :]}"] = var
                placed = True
                break
        if not placed and path.startswith("streams_"):
            rest = path[len("streams_") :]
            for spec in STREAMS:
                name = spec.name.lower() + "_"
                if rest.startswith(name) and rest[len(name) :] in StreamSettings.__struct_fields__:
                    raw.setdefault("streams", {}).setdefault(spec.name, {})[rest[len(name) :]] = value
                    origin[f"streams.{spec.name}.{rest[len(name) :]}"] = var
                    placed = True
        if not placed and path in fields and path not in struct_sections:
            raw[path] = value
            origin[path] = var
            placed = True
        if not placed:
            raise ConfigError(f"environment variable {var} does not name a config key")
    return raw


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    chosen = Path(path) if path else Path(env["SQT_CONFIG"]) if env.get("SQT_CONFIG") else None
    raw: dict[str, Any] = {}
    source = "defaults"
    if chosen is None and DEFAULT_FILE.exists():
        chosen = DEFAULT_FILE
    if chosen is not None:
        if not chosen.exists():
            raise ConfigError(f"config file {chosen} does not exist")
        try:
            raw = tomllib.loads(chosen.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
        source = str(chosen)
    origin: dict[str, str] = {}
    raw = env_overrides(raw, env, origin)
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_phrase(exc, source, origin)) from None
    config.retention()  # durations are checked now, not when a stream is applied
    return config


def _phrase(exc: msgspec.ValidationError, source: str, origin: dict[str, str]) -> str:
    """msgspec says `Expected `int`, got `str` - at `$.nats.port``; an operator wants the key
    first and where the value came from."""
    text = str(exc)
    m = re.search(r"^(.*?)(?: - at `\$((?:\.\w+|\[\d+\])*)`)?$", text, re.S)
    if m and m.group(2):
        key, message = m.group(2).lstrip("."), m.group(1)
        named = re.match(r"^`(\w+)`", message)  # a struct's own check names its field
        if named:
            key = f"{key}.{named.group(1)}"
        where = f"set by {origin[key]}" if key in origin else f"in {source}"
        return f"config key {key} ({where}): {message}"
    return f"config ({source}): {text}"
