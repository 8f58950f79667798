"""Fast bulk reads of a stream range: replays, history, exports.

nats-py builds a Msg object, parses headers and hops through an asyncio queue for every
message: about 115k msgs/s here, below the 150k/s a replay must reach. A replay is a
bounded, restartable read, so it runs on its own short-lived connection that speaks the
NATS wire protocol directly and slices frames out of the socket buffer (~300k msgs/s with
decoding). The JetStream consumer behind it is an ephemeral, flow-controlled push consumer
created through nats-py; a gap in its delivery sequence restarts the read after the last
message yielded. With `contiguous=True` an unfiltered read also proves it skipped nothing:
every hole in the stream sequences must be a deletion the stream reports, or lie below the
stream's first sequence when the read began. Long-lived subscriptions stay on nats-py. See
docs/adr/0003.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import unquote, urlparse

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy
from nats.nuid import NUID

from bus.auth import may_publish
from bus.connection import default_url
from bus.contiguity import Contiguity
from bus.contract import StoredMsg, parse_headers
from bus.errors import ReaderError

_CRLF = b"\r\n"
# The frame of almost every delivery: one match instead of splitting the line and its reply
# subject (`HMSG <subject> <sid> $JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending> <hdr> <total>`).
_DELIVERY = re.compile(rb"HMSG ([^ ]+) [^ ]+ \$JS\.ACK\.[^. ]+\.[^. ]+\.\d+\.(\d+)\.(\d+)\.(\d+)\.(\d+) (\d+) (\d+)\r\n")


class _Gap(Exception):
    """The delivery skipped a message (or went silent): everything before it has been yielded."""

    def __init__(self, last_seq: int) -> None:
        self.last_seq = last_seq  # the last stream sequence `_frames` yielded (0: none)


def ack_tokens(reply: bytes) -> tuple[int, int, int, int] | None:
    """(stream seq, delivery seq, timestamp ns, pending) from a `$JS.ACK...` reply subject."""
    toks = reply.split(b".")
    n = len(toks)
    if n == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        return int(toks[5]), int(toks[6]), int(toks[7]), int(toks[8])
    if n >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>[.<token>]
        return int(toks[7]), int(toks[8]), int(toks[9]), int(toks[10])
    return None


class _Wire:
    """A minimal NATS protocol connection: CONNECT, SUB, PUB, and frame parsing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, login: tuple[str, str] | None = None) -> _Wire:
        """`login`: the user and password of the client it reads for (bus/auth.py), which a
        `user:password@` in the URL overrides."""
        first = url.split(",")[0].strip()
        parsed = urlparse(first if "://" in first else f"nats://{first}")
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        info_line = await asyncio.wait_for(reader.readline(), 5)
        if not info_line.startswith(b"INFO "):
            raise ReaderError(f"unexpected greeting from {host}:{port}: {info_line[:60]!r}")
        info = json.loads(info_line[5:])
        if info.get("tls_required") or parsed.scheme == "tls":
            ctx = ssl.create_default_context()
            await writer.start_tls(ctx, server_hostname=host)
        connect: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "name": "sqt-reader",
            "lang": "python",
            "version": "0",
        }
        if parsed.username and parsed.password is not None:
            connect["user"], connect["pass"] = unquote(parsed.username), unquote(parsed.password)
        elif parsed.username:
            connect["auth_token"] = unquote(parsed.username)
        elif login is not None:
            connect["user"], connect["pass"] = login
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b"PONG"):
                return cls(reader, writer)
            if line.startswith(b"-ERR"):
                writer.close()
                raise ReaderError(f"NATS refused the reader connection: {line.decode().strip()}")

    def close(self) -> None:
        self.writer.close()


async def read_stream(
    nc: Client,
    stream: str,
    *,
    start_seq: int | None = None,
    start_time: dt.datetime | None = None,
    end_seq: int | None = None,
    subjects: tuple[str, ...] = (),
    follow: bool = False,
    url: str | None = None,
    contiguous: bool = False,
) -> AsyncGenerator[list[StoredMsg], None]:
    """Yield batches of stored messages in stream order.

    Starts at `start_seq` (or `start_time`, or the beginning); stops after `end_seq`, or
    when caught up with the stream as it was when the read began, unless `follow` is set.

    `contiguous` (unfiltered reads only) refuses a read that would skip a stored message: each
    message must follow the previous one (or `start_seq`, and `end_seq` must be reached) unless
    the sequences between are deletions the stream reports, or were below the stream's first
    sequence when the read began (removed by retention). Otherwise `ReplayIncomplete` names
    the missing range, before the batch that follows it is yielded.
    """
    if contiguous and subjects:
        # Other subjects interleave in the stream, so a filtered read's stream sequences have
        # holes by design; it relies on the delivery sequence (`_frames`' gap check) alone.
        raise ValueError("contiguous=True needs an unfiltered read (no subjects)")
    js = nc.jetstream()
    check: Contiguity | None = None
    if contiguous or (end_seq is None and not follow):
        state = (await js.stream_info(stream)).state
        if end_seq is None and not follow:
            end_seq = state.last_seq
        if contiguous:
            # Without a start, the read begins at 1 (DeliverPolicy.ALL); from a time, at
            # whatever sequence that time maps to, so the first message sets the expectation.
            expected = start_seq if start_seq is not None else (None if start_time is not None else 1)
            check = Contiguity(nc, stream, state.first_seq or 1, expected)
    next_seq = start_seq
    while True:
        try:
            async for batch in _read_once(nc, stream, next_seq, start_time, end_seq, subjects, follow, url):
                if check is not None:
                    await check.batch(batch)
                next_seq = batch[-1].seq + 1
                start_time = None
                yield batch
            if check is not None and end_seq is not None:
                await check.through(end_seq)
            return
        except _Gap:
            # Delivery skipped a message or went silent: read again from just after the last
            # message yielded (tracked here, so nothing handed out is repeated or skipped).
            pass


async def _read_once(
    nc: Client,
    stream: str,
    start_seq: int | None,
    start_time: dt.datetime | None,
    end_seq: int | None,
    subjects: tuple[str, ...],
    follow: bool,
    url: str | None,
) -> AsyncIterator[list[StoredMsg]]:
    if end_seq is not None and start_seq is not None and start_seq > end_seq:
        return
    user, password = nc.options.get("user"), nc.options.get("password")
    login = (user, password) if isinstance(user, str) and isinstance(password, str) else None
    wire = await _Wire.open(url or (nc.connected_url.geturl() if nc.connected_url else default_url()), login)
    try:
        async for batch in _deliveries(nc, wire, stream, start_seq, start_time, end_seq, subjects, follow):
            yield batch
    finally:
        wire.close()


async def _deliveries(
    nc: Client,
    wire: _Wire,
    stream: str,
    start_seq: int | None,
    start_time: dt.datetime | None,
    end_seq: int | None,
    subjects: tuple[str, ...],
    follow: bool,
) -> AsyncIterator[list[StoredMsg]]:
    # Under the client's own inbox prefix: its NATS user may subscribe to nothing else (bus/auth.py).
    inbox = f"{bytes(getattr(nc, '_inbox_prefix', b'_INBOX')).decode()}.read.{NUID().next().decode()}"
    wire.writer.write(f"SUB {inbox} 1\r\n".encode())
    await wire.writer.drain()
    js = nc.jetstream()
    extra: dict[str, Any]  # ConsumerConfig's start: a sequence or a time
    if start_seq is not None:
        policy, extra = DeliverPolicy.BY_START_SEQUENCE, {"opt_start_seq": max(start_seq, 1)}
    elif start_time is not None:
        policy, extra = DeliverPolicy.BY_START_TIME, {"opt_start_time": start_time.astimezone(dt.timezone.utc).isoformat()}
    else:
        policy, extra = DeliverPolicy.ALL, {}
    config = ConsumerConfig(
        deliver_subject=inbox,
        deliver_policy=policy,
        ack_policy=AckPolicy.NONE,
        replay_policy=ReplayPolicy.INSTANT,
        flow_control=True,
        idle_heartbeat=2.0,
        mem_storage=True,
        inactive_threshold=30.0,
        num_replicas=1,
        **extra,
    )
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    elif subjects:
        config.filter_subjects = list(subjects)
    info = await js.add_consumer(stream, config)
    try:
        if not follow and info.num_pending == 0:
            return
        async for batch in _frames(wire, end_seq, follow):
            yield batch
    finally:
        # A read-only user may not delete consumers (bus/auth.py); the consumer expires on its
        # own (inactive_threshold), so only who may is asked to clean up now.
        if may_publish(getattr(nc, "logged_in_as", None), f"$JS.API.CONSUMER.DELETE.{stream}.{info.name}"):
            try:
                await js.delete_consumer(stream, info.name)
            except Exception:  # noqa: BLE001 - it expires on its own (inactive_threshold)
                pass


async def _frames(wire: _Wire, end_seq: int | None, follow: bool) -> AsyncIterator[list[StoredMsg]]:
    """Batches of stored messages sliced from the wire; `_Gap` once delivery skips or stalls.

    A gap found inside a chunk ends the batch there: the messages before it are yielded
    first, so `_Gap` always comes after everything parsed has been handed out."""
    reader, writer = wire.reader, wire.writer
    buf = b""
    last_dseq = 0
    last_seq = 0
    limit = end_seq if end_seq is not None else 1 << 62
    stop_when_drained = not follow
    subjects: dict[bytes, str] = {}  # a replay sees few distinct subjects: decode each once
    idle_timeout = 10.0  # heartbeats come every 2s; silence this long means a dead read
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), idle_timeout)
        except asyncio.TimeoutError:
            raise _Gap(last_seq) from None
        if not chunk:
            raise ReaderError("NATS closed the reader connection")
        buf = buf + chunk if buf else chunk
        size = len(buf)
        pos = 0
        out: list[StoredMsg] = []
        append = out.append
        find = buf.find
        done = False
        gap = False
        match = _DELIVERY.match
        new = tuple.__new__
        while True:
            fast = match(buf, pos)
            if fast is not None:  # a stored message, the common case
                subject, sseq, sdseq, sts, spending, shlen, stlen = fast.groups()
                body = fast.end()
                hlen, tlen = int(shlen), int(stlen)
                end = body + tlen + 2
                if end > size:
                    break
                seq, dseq = int(sseq), int(sdseq)
                if dseq != last_dseq + 1:
                    gap = True
                    break
                if seq > limit:
                    done = True
                    break
                pos = end
                last_dseq = dseq
                last_seq = seq
                name = subjects.get(subject)
                if name is None:
                    name = subjects[subject] = subject.decode()
                # tuple.__new__: a NamedTuple's own __new__ is a Python call, once per message
                append(new(StoredMsg, (seq, name, buf[body + hlen : body + tlen], buf[body : body + hlen], int(sts))))
                if seq == limit or (stop_when_drained and spending == b"0"):
                    done = True
                    break
                continue
            eol = find(_CRLF, pos)
            if eol < 0:
                break
            headers = buf.startswith(b"HMSG", pos)
            if headers or buf.startswith(b"MSG ", pos):
                parts = buf[pos:eol].split(b" ")
                if headers:  # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
                    if len(parts) == 6:
                        subject, reply, hlen, tlen = parts[1], parts[3], int(parts[4]), int(parts[5])
                    else:
                        subject, reply, hlen, tlen = parts[1], b"", int(parts[3]), int(parts[4])
                else:  # MSG <subject> <sid> [reply] <bytes>: a message stored without headers
                    subject, reply, hlen, tlen = parts[1], parts[3] if len(parts) == 5 else b"", 0, int(parts[-1])
                body = eol + 2
                end = body + tlen + 2
                if end > size:
                    break
                pos = end
                if reply.startswith(b"$JS.ACK."):
                    toks = reply.split(b".")  # ack_tokens inlined: this loop is the replay's hot path
                    if len(toks) == 9:
                        seq, dseq, ts_ns, pending = int(toks[5]), int(toks[6]), int(toks[7]), int(toks[8])
                    else:
                        meta = ack_tokens(reply)
                        if meta is None:
                            raise ReaderError(f"unreadable ack subject {reply!r}")
                        seq, dseq, ts_ns, pending = meta
                    if dseq != last_dseq + 1:
                        gap = True
                        break
                    if seq > limit:
                        done = True
                        break
                    last_dseq = dseq
                    last_seq = seq
                    name = subjects.get(subject)
                    if name is None:
                        name = subjects[subject] = subject.decode()
                    append(StoredMsg(seq, name, buf[body + hlen : body + tlen], buf[body : body + hlen], ts_ns))
                    if seq == limit or (stop_when_drained and pending == 0):
                        done = True
                        break
                elif _control(writer, buf[body : body + hlen], reply) and stop_when_drained:
                    # An idle heartbeat: the consumer has had nothing to send for a while, so
                    # everything that was there when the read began has been delivered.
                    done = True
                    break
            elif buf.startswith(b"PING", pos):
                writer.write(b"PONG\r\n")
                pos = eol + 2
            elif buf.startswith(b"-ERR", pos):
                raise ReaderError(buf[pos:eol].decode(errors="replace"))
            else:  # +OK, PONG, INFO updates
                pos = eol + 2
        buf = buf[pos:]
        if out:
            yield out
        if gap:
            raise _Gap(last_seq)
        if done:
            return


def _control(writer: asyncio.StreamWriter, headers: bytes, reply: bytes) -> bool:
    """Answer flow control requests and stalled-consumer heartbeats so delivery continues.

    Returns True for an idle heartbeat."""
    if reply:  # flow control request: reply with an empty message
        writer.write(b"PUB " + reply + b" 0\r\n\r\n")
        return False
    hdrs = parse_headers(headers)
    stalled = hdrs.get("Nats-Consumer-Stalled")
    if stalled:
        # Delivery is blocked on our flow-control reply, not finished: answer, keep reading.
        writer.write(b"PUB " + stalled.encode() + b" 0\r\n\r\n")
        return False
    return b"Idle Heartbeat" in headers
