"""Streams and key-value buckets, declared once as data and applied idempotently.

`apply()` creates what is missing, updates what differs in the fields we manage, and says
what it did; running it twice changes nothing the second time. Components call `prepare()`,
which applies only when their NATS user may (bus/auth.py) and otherwise waits for the streams.

Replicas: a declaration says AUTO unless the config names a count (`[streams.<NAME>]
replicas`, through `with_retention`): one replica per node of the server's JetStream cluster
(bus/cluster.py), 1 on a single server, never fewer than an existing stream of the cluster
has. A count above the nodes there are is lowered to them, with a warning (a config written for
a cluster also runs on one server). A stream sourced from others (a strategy's own input stream) gets
its origins' count when it is created, and keeps it: it is as durable as what it copies, and
its owner may create a stream but never update one (bus/auth.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamSource
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from bus.auth import may_administer

log = logging.getLogger("bus.streams")

DAY = 86_400.0
MINUTE = 60.0
AUTO = 0  # replicas: one per node of the cluster (module docstring)


@dataclass(frozen=True)
class Source:
    """One stream sourced into another, filtered to some subjects."""

    stream: str
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age: float  # seconds
    duplicate_window: float  # seconds
    max_bytes: int = -1
    replicas: int = AUTO
    sources: tuple[Source, ...] = ()
    # Source only what is stored after the stream is created (else: the sources' whole history).
    # The start is a sequence per source, read when the stream is created: nats-server 2.15
    # loses messages that arrive while sources set up when they start at a *time* (ADR 0002).
    sources_from_now: bool = False

    def config(self, start_seqs: dict[str, int] | None = None) -> StreamConfig:
        starts = start_seqs or {}
        sources = [
            StreamSource(name=s.stream, filter_subject=subject, opt_start_seq=starts.get(s.stream))
            for s in self.sources
            for subject in s.subjects
        ]
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects) or None,
            sources=sources or None,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas or 1,
            allow_direct=True,
        )


@dataclass(frozen=True)
class BucketSpec:
    name: str
    description: str
    history: int = 1
    max_value_size: int = 8 * 1024 * 1024
    replicas: int = AUTO


MARKET = StreamSpec("MARKET", ("md.>",), "candles, tickers, trades, funding, gaps", 7 * DAY, 2 * MINUTE)
ACCOUNT = StreamSpec("ACCOUNT", ("acct.>",), "orders, fills, positions, balances (system of record)", 365 * DAY, 10 * MINUTE)
COMMAND = StreamSpec("COMMAND", ("cmd.>",), "order commands from strategies and risk", 30 * DAY, 15 * MINUTE)
OPS = StreamSpec("OPS", ("ops.>",), "strategy state, risk, breakers, reconciliation, controls", 30 * DAY, 10 * MINUTE)
DLQ = StreamSpec("DLQ", ("dlq.>",), "messages a consumer could not process; reason in headers", 30 * DAY, 10 * MINUTE)
STREAMS: tuple[StreamSpec, ...] = (MARKET, ACCOUNT, COMMAND, OPS, DLQ)

CHECKPOINTS = BucketSpec("checkpoints", "consumer state with the input sequence it reflects", history=5)
BREAKERS = BucketSpec("breakers", "risk breaker state that executors read before every order", history=10)
REGISTRY = BucketSpec("registry", "running component instances")
BUCKETS: tuple[BucketSpec, ...] = (CHECKPOINTS, BREAKERS, REGISTRY)


@dataclass(frozen=True)
class Retention:
    """Operator overrides of a stream's limits (from the config file)."""

    max_age: float | None = None
    duplicate_window: float | None = None
    max_bytes: int | None = None
    replicas: int | None = None


def with_retention(specs: tuple[StreamSpec, ...], overrides: dict[str, Retention]) -> tuple[StreamSpec, ...]:
    out = []
    for spec in specs:
        r = overrides.get(spec.name)
        if r:
            spec = replace(
                spec,
                **{k: v for k, v in vars(r).items() if v is not None},
            )
        out.append(spec)
    return tuple(out)


@dataclass
class Change:
    kind: str  # created | updated | unchanged
    name: str
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        tail = f": {'; '.join(self.details)}" if self.details else ""
        return f"{self.kind:9} {self.name}{tail}"


def _human_seconds(value: float | None) -> str:
    if not value:
        return "unlimited"
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", MINUTE)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def _managed(config: StreamConfig) -> dict[str, Any]:
    """The fields apply() owns, in a comparable, printable form."""
    return {
        "subjects": sorted(config.subjects or []),
        "sources": sorted(f"{s.name}:{s.filter_subject}" for s in (config.sources or [])),
        "max_age": _human_seconds(config.max_age),
        "dedupe": _human_seconds(config.duplicate_window),
        "max_bytes": config.max_bytes if config.max_bytes and config.max_bytes > 0 else "unlimited",
        "replicas": config.num_replicas or 1,
        "description": config.description or "",
    }


async def cluster_nodes(js: JetStreamContext) -> int:
    """What AUTO replicas means on the server `js` talks to: its cluster's size, 1 alone."""
    from bus.cluster import cluster_size  # it imports this module

    nc = getattr(js, "_nc", None)
    return 1 if nc is None else await cluster_size(nc)


def _follows_sources(spec: StreamSpec) -> bool:
    """A sourced stream with AUTO replicas takes its origins' count (module docstring)."""
    return bool(spec.sources) and spec.replicas == AUTO


async def _sources_replicas(js: JetStreamContext, spec: StreamSpec) -> int:
    counts = [1]
    for origin in {s.stream for s in spec.sources}:
        try:
            counts.append((await js.stream_info(origin)).config.num_replicas or 1)
        except NotFoundError:
            pass
    return max(counts)


def _replicas(name: str, wanted: int, nodes: int) -> int:
    """AUTO as one per node; a count above the nodes there are, lowered to them."""
    if wanted == AUTO:
        return nodes
    if wanted > nodes:
        log.warning("%s: %d replicas asked for, but the server has %d node(s): %d", name, wanted, nodes, nodes)
        return nodes
    return wanted


async def apply_stream(js: JetStreamContext, spec: StreamSpec, *, nodes: int | None = None) -> Change:
    """Create or update one stream; `nodes` is the cluster's size (asked if None)."""
    if not _follows_sources(spec):
        count = _replicas(spec.name, spec.replicas, nodes if nodes is not None else await cluster_nodes(js))
        spec = spec if count == spec.replicas else replace(spec, replicas=count)
    wanted = spec.config()
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        if spec.sources_from_now:
            starts = {s.stream: (await js.stream_info(s.stream)).state.last_seq + 1 for s in spec.sources}
            wanted = spec.config(starts)
        if _follows_sources(spec):
            wanted.num_replicas = await _sources_replicas(js, spec)
        await js.add_stream(wanted)
        m = _managed(wanted)
        what = m["subjects"] or m["sources"]
        copies = f"; {m['replicas']} replicas" if m["replicas"] > 1 else ""
        return Change("created", spec.name, [f"{', '.join(what)}; max_age {m['max_age']}; dedupe {m['dedupe']}{copies}"])
    if _follows_sources(spec):
        # Kept as created: its owner may create streams but never update one (bus/auth.py).
        wanted.num_replicas = info.config.num_replicas
    have, want = _managed(info.config), _managed(wanted)
    diffs = [f"{k} {have[k]} -> {want[k]}" for k in want if have[k] != want[k]]
    if not diffs:
        return Change("unchanged", spec.name)
    current = info.config
    # Keep where sourcing started; a source added now starts where its origin is now.
    if wanted.sources:
        started = {(s.name, s.filter_subject): s.opt_start_seq for s in current.sources or []}
        for s in wanted.sources:
            key = (s.name, s.filter_subject)
            if key in started:
                s.opt_start_seq = started[key]
            elif spec.sources_from_now:
                s.opt_start_seq = (await js.stream_info(s.name)).state.last_seq + 1
    await js.update_stream(wanted)
    return Change("updated", spec.name, diffs)


async def open_bucket(js: JetStreamContext, spec: BucketSpec) -> KeyValue:
    """The bucket, created first if it is not there yet."""
    try:
        return await js.key_value(spec.name)
    except (BucketNotFoundError, NotFoundError):
        await apply_bucket(js, spec)
        return await js.key_value(spec.name)


async def apply_bucket(js: JetStreamContext, spec: BucketSpec, *, nodes: int | None = None) -> Change:
    from nats.js.api import KeyValueConfig

    count = _replicas(f"kv:{spec.name}", spec.replicas, nodes if nodes is not None else await cluster_nodes(js))
    spec = spec if count == spec.replicas else replace(spec, replicas=count)
    stream = f"KV_{spec.name}"
    created = False
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=spec.name,
                    description=spec.description,
                    history=spec.history,
                    max_value_size=spec.max_value_size,
                    replicas=spec.replicas,
                    storage=StorageType.FILE,
                )
            )
            created = True
        except BadRequestError:
            pass  # another process created it in between (and may have refused its rollups already): it is there
        info = await js.stream_info(stream)
    cfg = info.config
    diffs = []
    # A bucket refuses `Nats-Rollup` (nats-py creates one that allows it): with it, whoever may
    # write one key could wipe the whole bucket (every lease, checkpoint or breaker). Nothing of
    # ours purges a key (a purge is a rollup); a key is deleted instead (docs/adr/0026).
    if cfg.allow_rollup_hdrs:
        diffs.append("rollups refused")
        cfg.allow_rollup_hdrs = False
    if (cfg.max_msgs_per_subject or 1) != spec.history:
        diffs.append(f"history {cfg.max_msgs_per_subject} -> {spec.history}")
        cfg.max_msgs_per_subject = spec.history
    if (cfg.max_msg_size or -1) != spec.max_value_size:
        diffs.append(f"max_value_size {cfg.max_msg_size} -> {spec.max_value_size}")
        cfg.max_msg_size = spec.max_value_size
    if (cfg.num_replicas or 1) != spec.replicas:
        diffs.append(f"replicas {cfg.num_replicas or 1} -> {spec.replicas}")
        cfg.num_replicas = spec.replicas
    if diffs:
        await js.update_stream(cfg)
    if created:
        copies = f"; {spec.replicas} replicas" if spec.replicas > 1 else ""
        return Change("created", f"kv:{spec.name}", [f"history {spec.history}{copies}"])
    return Change("updated", f"kv:{spec.name}", diffs) if diffs else Change("unchanged", f"kv:{spec.name}")


async def apply(
    js: JetStreamContext,
    streams: tuple[StreamSpec, ...] = STREAMS,
    buckets: tuple[BucketSpec, ...] = BUCKETS,
) -> list[Change]:
    nodes = await cluster_nodes(js)
    changes = [await apply_stream(js, s, nodes=nodes) for s in streams]
    changes += [await apply_bucket(js, b, nodes=nodes) for b in buckets]
    return changes


async def prepare(
    nc: Client,
    streams: tuple[StreamSpec, ...] = STREAMS,
    buckets: tuple[BucketSpec, ...] = BUCKETS,
    *,
    poll_s: float = 1.0,
    wait: bool = True,
) -> list[Change]:
    """What a component does at start: apply the declarations when its user may (the admin, or
    any client of a server without users); otherwise wait until they exist, saying once what
    is missing, since creating streams is the admin's (`sqt streams apply`, docs/adr/0026).
    `wait=False` (a command a person waits on) raises StreamsMissing at once instead."""
    if may_administer(getattr(nc, "logged_in_as", None)):
        return await apply(nc.jetstream(), streams, buckets)
    js = nc.jetstream()
    said = False
    for name in [s.name for s in streams] + [f"KV_{b.name}" for b in buckets]:
        while True:
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                if not wait:
                    raise StreamsMissing(f"stream {name} does not exist: run `sqt streams apply` (as the admin) first") from None
                if not said:
                    log.warning("waiting for stream %s: run `sqt streams apply` (as the admin) to create it", name)
                    said = True
                await asyncio.sleep(poll_s)
    return []


class StreamsMissing(Exception):
    """A stream the caller needs is not there, and its user may not create it."""
