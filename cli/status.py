"""`sqt status` and `sqt streams`: what the bus holds, who consumes it, who answers."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
from nats.aio.client import Client

from bus import checkpoints
from bus.connection import Unreachable, connect
from bus.streams import BUCKETS, apply
from cli.config import Config


def text_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [*rows, headers]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


async def _connected(config: Config, role: str = "operator") -> Client:
    try:
        return await connect(config.nats_url, name="sqt-status", attempts=3, role=role)
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


async def services(nc: Client, wait: float = 0.4, subject: str = "$SRV.INFO") -> list[dict]:
    """Every micro service that answers `$SRV.INFO` (or `$SRV.STATS`) within `wait` seconds."""
    inbox = nc.new_inbox()
    found: list[dict] = []

    async def on_reply(msg) -> None:
        try:
            found.append(json.loads(msg.data))
        except ValueError:
            pass

    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return sorted(found, key=lambda s: (s.get("name", ""), s.get("metadata", {}).get("instance", "")))


async def _status(config: Config) -> int:
    nc = await _connected(config)
    js = nc.jetstream()
    try:
        rows, consumers = [], []
        for info in sorted(await js.streams_info(), key=lambda s: s.config.name or ""):
            st = info.state
            name = info.config.name or ""
            if name.startswith("KV_"):
                continue
            rows.append((name, f"{st.messages:,}", f"{st.bytes / 1e6:.1f} MB", str(st.first_seq), str(st.last_seq), str(st.consumer_count)))
            for ci in await js.consumers_info(name):
                if not ci.config.durable_name:
                    continue
                consumers.append(
                    (name, ci.name, f"{ci.num_pending:,}", str(ci.num_ack_pending), str(ci.ack_floor.stream_seq if ci.ack_floor else 0))
                )
        print(text_table(("stream", "messages", "size", "first", "last", "consumers"), rows))
        print()
        print(text_table(("stream", "consumer", "lag", "unacked", "ack floor"), consumers or [("-", "-", "-", "-", "-")]))
        print()
        cps = []
        try:
            kv = await js.key_value(checkpoints.CHECKPOINTS.name)
            for key in await kv.keys():
                entry = await kv.get(key)
                seq = msgspec.json.decode(entry.value or b"{}").get("seq", "?") if entry.value else "?"
                cps.append((key, str(seq), str(entry.revision)))
        except Exception:  # noqa: BLE001 - no bucket yet, or empty
            pass
        print(text_table(("checkpoint", "input seq", "revision"), cps or [("-", "-", "-")]))
        print()
        print(text_table(("component", "instance", "micro", "health", "http", "uptime", "version"), await component_rows(nc, config)))
    finally:
        await nc.close()
    return 0


def expected(config: Config, registry: list[tuple[str, int]] | None = None) -> list[tuple[str, str, int]]:
    """(component, instance, http port or 0) of every component the config runs, and the grids
    the registry runs (the config's until it is seeded)."""
    out = [
        ("sim", config.sim.venue, config.sim.metrics_port),
        ("executor", f"{config.executor.venue}-{config.executor.account}", config.executor.metrics_port),
        ("gateway", f"port-{config.gateway.port}", config.gateway.port),
        ("archive", "main", config.archive.metrics_port),
    ]
    grids = registry if registry is not None else [(g.instance, g.metrics_port) for g in config.grids]
    return out + [("grid", instance, port) for instance, port in grids]


async def registry_grids(nc: Client) -> list[tuple[str, int]] | None:
    """(instance, metrics port) of every grid the registry runs; None before it is seeded."""
    from orchestration.registry import Registry

    try:
        records = await Registry(nc).records("grid")
    except Exception:  # noqa: BLE001 - no registry yet: the config's grids are expected
        return None
    if not records:
        return None
    live = [r for r, _ in records if not (r.desired == "removed" and r.phase == "done")]
    return [(r.instance, int(r.params.get("metrics_port") or 0)) for r in live]


async def http_health(session: aiohttp.ClientSession, where: str) -> str:
    """ "ok", "unhealthy" (503, with its first problem) or "no answer" from http://<where>/health."""
    try:
        async with session.get(f"http://{where}/health", timeout=aiohttp.ClientTimeout(total=1.5)) as r:
            if r.status == 200:
                return "ok"
            try:
                problems = (await r.json(content_type=None)).get("problems") or []
            except (ValueError, aiohttp.ClientError):
                problems = []
            return f"unhealthy: {problems[0]}" if problems else f"unhealthy ({r.status})"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return "no answer"


def _uptime(started: str | None) -> str:
    if not started:
        return "-"
    try:
        seconds = time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    h, rest = divmod(int(max(seconds, 0)), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


async def component_rows(nc: Client, config: Config) -> list[tuple[str, ...]]:
    """One row per component: those the config runs (answering or not) and any other that answers."""
    answered: dict[tuple[str, str], dict[str, Any]] = {}
    for s in await services(nc, subject="$SRV.STATS"):
        meta = s.get("metadata") or {}
        component = meta.get("component") or str(s.get("name", "?")).removeprefix("sqt-")
        instance = meta.get("instance") or meta.get("venue") or ""
        answered[(component, instance)] = s
    keys: list[tuple[str, str, int]] = expected(config, await registry_grids(nc))
    known = {(c, i) for c, i, _ in keys}
    keys += [(c, i, 0) for c, i in sorted(answered) if (c, i) not in known]
    rows: list[tuple[str, ...]] = []
    async with aiohttp.ClientSession() as session:
        for component, instance, port in keys:
            svc: dict[str, Any] = answered.get((component, instance)) or {}
            where = svc.get("metadata", {}).get("http") or (f"127.0.0.1:{port}" if port else "")
            health = await http_health(session, where) if where else "-"
            rows.append(
                (
                    component,
                    instance,
                    "yes" if svc else "no",
                    health,
                    where.rsplit(":", 1)[-1] if where else "-",
                    _uptime(svc.get("started")) if svc else "-",
                    svc.get("version", "?") if svc else "-",
                )
            )
    return rows


def status(config: Config) -> int:
    return asyncio.run(_status(config))


async def _streams(config: Config, action: str) -> int:
    nc = await _connected(config, "admin" if action == "apply" else "operator")
    js = nc.jetstream()
    try:
        if action == "apply":
            for change in await apply(js, config.declared_streams(), BUCKETS):
                print(change)
            from orchestration.provision import provision_all
            from orchestration.registry import Registry

            registry = Registry(nc)
            try:
                for change in await provision_all(nc, registry):  # the registry's grids' input streams
                    print(change)
            finally:
                await registry.close()
            return 0
        rows = []
        for info in sorted(await js.streams_info(), key=lambda s: s.config.name or ""):
            c = info.config
            subjects = ", ".join(c.subjects or []) or ", ".join(f"<{s.name}:{s.filter_subject}>" for s in c.sources or [])
            age = f"{c.max_age / 86400:g}d" if c.max_age else "unlimited"
            rows.append((c.name or "", subjects, f"{info.state.messages:,}", f"{info.state.bytes / 1e6:.1f} MB", age))
        print(text_table(("stream", "subjects", "messages", "size", "max age"), rows))
        return 0
    finally:
        await nc.close()


def streams_command(config: Config, action: str) -> int:
    return asyncio.run(_streams(config, action))
