"""One process per consumer: a lease in the `registry` bucket, renewed while its holder lives.

Two processes running the same durable consumer would fight over it: each recreates the
JetStream consumer at the position it knows (ADR 0002). A consumer therefore takes a lease
first, under the key `lease.<durable name>`, whose value names the holder:

    {"host": "box", "pid": 4242, "since": 1764484800000, "renewed": 1764484812000, "ttl": 5.0, ...}

Every write is a compare-and-set on the key's revision (KV create / update with the last
revision), so of two processes racing for it exactly one wins. A holder renews every
`renew_every` seconds; a lease whose revision has not moved for its `ttl` belongs to a holder
that is gone. Acquiring a held lease:

- a holder on this host whose pid is no longer alive (a `kill -9`, then a restart by `sqt up`)
  is taken over at once;
- any other holder is watched for up to its ttl: if it renews, it is alive and the lease is
  refused (`LeaseHeld`, naming it); if it does not (a crash on another host), it is taken over.

So a crashed holder delays a restart by one ttl at most, and a second live process is refused.
While NATS is unreachable, renewals fail quietly and are tried again next period; a renewal
that finds another holder's revision sets `lost`, and the holder must stop consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from datetime import datetime, timezone
from typing import cast

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bus.errors import LeaseHeld
from bus.streams import REGISTRY, open_bucket

log = logging.getLogger("bus.lease")

KEY_PREFIX = "lease."
_KEY_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's "wrong last sequence" error codes
_MAX_WATCH_S = 60.0  # a holder claiming a longer ttl is still given up on after this long
# What a KV call raises while the server is unreachable or restarting (timeouts, no responders,
# JetStream not ready yet); KeyWrongLastSequenceError is caught before these.
_UNAVAILABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """The value of a lease key."""

    host: str
    pid: int
    since: int  # ms since the epoch: when this holder took the lease
    renewed: int  # ms since the epoch: its last renewal
    ttl: float  # seconds without a renewal after which the lease may be taken over
    token: str = ""  # which Lease object wrote it: one process may hold several leases
    pidns: int = 0  # the holder's pid namespace: a pid means something only within it


_decoder = msgspec.json.Decoder(Holder)


def lease_key(name: str) -> str:
    """`grid-btc-neutral` -> `lease.grid-btc-neutral`; other characters escaped as `=XX`."""
    return KEY_PREFIX + "".join(ch if ch in _KEY_SAFE else "".join(f"={b:02X}" for b in ch.encode()) for ch in name)


def pid_alive(pid: int) -> bool:
    """Whether `pid` names a live process here (a zombie, killed but not yet reaped, is dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all we know


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Lease:
    """The lease on one consumer name: `acquire()`, then renewed in the background until `release()`."""

    def __init__(self, nc: Client, name: str, *, ttl: float = 5.0, renew_every: float = 1.0) -> None:
        if not 0 < renew_every < ttl:
            raise ValueError(f"renew_every ({renew_every}s) must be positive and below ttl ({ttl}s)")
        self.nc = nc
        self.name = name
        self.key = lease_key(name)
        self.ttl = ttl
        self.renew_every = renew_every
        self.lost = asyncio.Event()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._pidns = _pid_namespace()
        self._token = secrets.token_hex(8)
        self._since = 0
        self._revision = 0  # of our last write; 0 while we do not hold the lease
        self._kv: KeyValue | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._revision > 0 and not self.lost.is_set()

    # ----------------------------------------------------------------- acquire / release

    async def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the live holder. See the module docstring."""
        kv = await self._bucket()
        while True:
            current = await self._read(kv)
            if current is None:
                if await self._write(kv, last=None):
                    return
                continue  # created by someone else meanwhile: look at them
            holder, revision = current
            if self._dead_here(holder):
                why = f"its holder (pid {holder.pid} on this host) is gone"
            else:
                changed, seen = await self._watch(kv, holder, revision)
                if changed and seen is None:
                    continue  # released meanwhile
                if seen is not None:
                    raise self._refusal(seen[0])  # it renewed (or was just taken over): alive
                why = f"its holder (host {holder.host} pid {holder.pid}) did not renew it for {holder.ttl:g}s"
            if await self._write(kv, last=revision):
                log.info("lease %s taken over: %s", self.name, why)
                return
            # Another contender took it over first.
            raced = await self._read(kv)
            if raced is not None:
                raise self._refusal(raced[0])

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours, so a restart need not wait.

        Quiet and quick while NATS is unreachable: the lease then expires after its ttl (and a
        restart on this host takes it over at once, its pid being gone)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        revision, self._revision = self._revision, 0
        if not revision or self.lost.is_set() or self._kv is None:
            return
        if not self.nc.is_connected:
            log.info("lease %s not released (NATS unreachable); it expires in %gs", self.name, self.ttl)
            return
        try:
            await asyncio.wait_for(self._delete_if_ours(self._kv, revision), timeout=self.renew_every)
        except _UNAVAILABLE as exc:
            log.info("lease %s not released (%s); it expires in %gs", self.name, exc or type(exc).__name__, self.ttl)

    # ----------------------------------------------------------------- internals

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self.nc.jetstream(), REGISTRY)
        return self._kv

    async def _read(self, kv: KeyValue) -> tuple[Holder, int] | None:
        """The current holder and the key's revision; None when nobody holds it."""
        try:
            entry = await kv.get(self.key)
        except KeyNotFoundError:  # never written, deleted or purged
            return None
        if not entry.value:
            return None
        try:
            holder = _decoder.decode(entry.value)
        except msgspec.DecodeError:
            # Not written by a Lease: treat it as a holder that never renews.
            holder = Holder(host="?", pid=0, since=0, renewed=0, ttl=self.ttl)
        return holder, cast(int, entry.revision)  # nats-py's Entry has Optional fields; a get always sets it

    def _value(self) -> bytes:
        now = _now_ms()
        holder = Holder(host=self.host, pid=self.pid, since=self._since, renewed=now, ttl=self.ttl, token=self._token, pidns=self._pidns)
        return msgspec.json.encode(holder)

    async def _write(self, kv: KeyValue, last: int | None) -> bool:
        """Create (last=None) or take over (CAS on `last`); False if someone else wrote first."""
        self._since = _now_ms()
        try:
            if last is None:
                revision = await kv.create(self.key, self._value())
            else:
                revision = await kv.update(self.key, self._value(), last=last)
        except KeyWrongLastSequenceError:
            self._since = 0
            return False
        self._revision = revision
        self.lost.clear()
        if self._renewer is not None:  # acquired again: one renewer only
            self._renewer.cancel()
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.name}")
        return True

    def _dead_here(self, holder: Holder) -> bool:
        """A holder on this host (same pid namespace) whose process is gone."""
        return holder.host == self.host and holder.pidns == self._pidns and holder.pid != self.pid and not pid_alive(holder.pid)

    async def _watch(self, kv: KeyValue, holder: Holder, revision: int) -> tuple[bool, tuple[Holder, int] | None]:
        """Watch the key for up to the holder's ttl: (True, what it is now) as soon as it
        changes (None: released), (False, None) if it did not change (its holder is gone)."""
        ttl = min(max(holder.ttl, self.renew_every), _MAX_WATCH_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ttl
        poll = min(0.1 * ttl, 0.25)
        while loop.time() < deadline:
            await asyncio.sleep(poll)
            current = await self._read(kv)
            if current is None or current[1] != revision:
                return True, current
        return False, None

    def _refusal(self, holder: Holder) -> LeaseHeld:
        age = max(0.0, (_now_ms() - holder.renewed) / 1000)
        return LeaseHeld(
            f"consumer {self.name} is already running: its lease is held by host {holder.host} pid {holder.pid} "
            f"since {_clock(holder.since)} (renewed {age:.1f}s ago, ttl {holder.ttl:g}s); stop that process first"
        )

    async def _renew(self) -> None:
        kv = await self._bucket()
        while not self.nc.is_closed:
            await asyncio.sleep(self.renew_every)
            try:
                self._revision = await asyncio.wait_for(kv.update(self.key, self._value(), last=self._revision), self.renew_every)
            except KeyWrongLastSequenceError:
                if await self._still_ours(kv):
                    continue
                self.lost.set()
                log.error("lease %s lost: another process took it over", self.name)
                return
            except _UNAVAILABLE as exc:
                # Unreachable or restarting: try again next period. If the outage outlasts the
                # ttl and someone takes the lease meanwhile, the next renewal finds out.
                log.debug("lease %s not renewed (%s)", self.name, exc or type(exc).__name__)

    async def _still_ours(self, kv: KeyValue) -> bool:
        """After a refused renewal: was the key's last write ours (an earlier renewal whose
        answer was lost)? Then carry on from its revision."""
        try:
            current = await self._read(kv)
        except _UNAVAILABLE:
            return True  # cannot tell now; the next renewal asks again
        if current is not None and current[0].token == self._token:
            self._revision = current[1]
            return True
        return False

    async def _delete_if_ours(self, kv: KeyValue, revision: int) -> None:
        for _ in range(2):
            try:
                await kv.delete(self.key, last=revision)
                return
            except APIError as exc:
                if exc.err_code not in _WRONG_LAST_SEQUENCE:
                    raise
            current = await self._read(kv)
            if current is None or current[0].token != self._token:
                return  # someone else's now: not ours to delete
            revision = current[1]
