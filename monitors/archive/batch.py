"""A batch of stored messages as rows, grouped into files; file names and high-water marks (pure).

The messages are `StoredMsg`s as bus/reader.py yields them (payload, raw headers, store time).

A batch is what one flush writes for one stream: every message delivered since the last flush,
contiguous in the stream. Its rows are grouped by (day of store time, type): one Parquet file
per group, named `<type>-<first seq>-<last seq>.parquet` (20 digits each, so names sort by
sequence) under `<STREAM>/date=YYYY-MM-DD/`. A batch's files are committed together (writer.py),
so the highest last sequence in a stream's file names is its high-water mark: every message at
or below it is archived, none above it is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus.contract import StoredMsg, parse_headers
from monitors.archive.columns import RESERVED, TYPES, UNDECODED, describe
from schemas.codec import DecodeError, decode

NAME = re.compile(r"^([a-z][a-z0-9_]*)-(\d{20})-(\d{20})\.parquet$")
MSG_ID = "Nats-Msg-Id"

# Message fields renamed because an envelope column has their name (GapMarker.stream).
_RENAMED: dict[str, tuple[tuple[str, str], ...]] = {
    tag: tuple((f.encode_name, f"msg_{f.name}") for f in msgspec.structs.fields(cls) if f.name in RESERVED) for tag, cls in TYPES.items()
}


def Stored(seq: int, subject: str, data: bytes, headers: dict[str, str] | None = None, stored_ns: int = 0) -> StoredMsg:  # noqa: N802
    """A stored message as the reader yields it, from its headers as a dict (tests, benchmarks and
    `sqt data import`'s tests build them with this; it was a class of its own at first)."""
    raw = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" if headers else b""
    return StoredMsg(seq, subject, data, raw, stored_ns)


@dataclass
class Group:
    """The rows of one file: one stream, one day, one type (each row a JSON line, its message beside it)."""

    stream: str
    date: str
    type: str
    first: int
    last: int
    lines: list[bytes] = field(default_factory=list)
    msgs: list[StoredMsg] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts (for tests and for reading; the writer uses the lines)."""
        return [msgspec.json.decode(line) for line in self.lines]

    @property
    def name(self) -> str:
        return file_name(self.type, self.first, self.last)

    @property
    def directory(self) -> str:
        return f"{self.stream}/date={self.date}"


def file_name(type_: str, first: int, last: int) -> str:
    return f"{type_}-{first:020d}-{last:020d}.parquet"


def parse_name(name: str) -> tuple[str, int, int] | None:
    """(type, first seq, last seq) of an archive file name; None for anything else."""
    m = NAME.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3))


def high_water(names: Iterable[str]) -> int:
    """The highest sequence the committed files of a stream hold (0: none)."""
    mark = 0
    for name in names:
        parsed = parse_name(name)
        if parsed is not None and parsed[2] > mark:
            mark = parsed[2]
    return mark


_DAYS: dict[int, str] = {}
_NS_PER_DAY = 86_400 * 1_000_000_000


def day_of(stored_ns: int) -> str:
    """The UTC day of a store time: the partition a message's row goes to."""
    # Whole days by integer division (ns / 1e9 as a float rounds 23:59:59.999999999 up), each
    # day's name computed once: a batch has one or two.
    index = stored_ns // _NS_PER_DAY
    name = _DAYS.get(index)
    if name is None:
        name = _DAYS[index] = dt.datetime.fromtimestamp(index * 86_400, dt.timezone.utc).strftime("%Y-%m-%d")
    return name


def row_of(stream: str, msg: StoredMsg) -> tuple[str, dict[str, Any]]:
    """(type, row) of one message, decoded by the project's codec; a payload that does not
    decode (or validate) is an `undecoded` row with the codec's reason and the exact bytes."""
    headers = parse_headers(msg.raw_headers) if msg.raw_headers else {}
    extra = {k: v for k, v in headers.items() if k != MSG_ID} or None
    try:
        message = decode(msg.data)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        row: dict[str, Any] = {
            "type": UNDECODED,
            "error": describe(exc),
            "raw_bytes": msg.data,
            "raw": msg.data.decode("utf-8", errors="replace"),
        }
    else:
        row = msgspec.to_builtins(message)
        tag = row["type"]
        for key, name in _RENAMED[tag]:
            row[name] = row.pop(key, None)
        row["raw"] = msg.data.decode("utf-8")  # valid JSON is UTF-8: the codec just read it
    row["stream"] = stream
    row["seq"] = msg.seq
    row["subject"] = msg.subject
    row["stored_ns"] = msg.ts_ns
    row["msg_id"] = headers.get(MSG_ID)
    row["headers"] = extra
    return row["type"], row


_json = msgspec.json.Encoder().encode


def group(stream: str, msgs: Iterable[StoredMsg]) -> list[Group]:
    """The files a batch makes: one per (day, type), each with its first and last sequence,
    in the order of their first sequence."""
    groups: dict[tuple[str, str], Group] = {}
    for msg in msgs:
        tag, row = row_of(stream, msg)
        line = _json(row)  # (building the line from the codec's own encoding was no faster)
        key = (day_of(msg.ts_ns), tag)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(stream, key[0], tag, msg.seq, msg.seq)
        if msg.seq < g.first:
            g.first = msg.seq
        if msg.seq > g.last:
            g.last = msg.seq
        g.lines.append(line)
        g.msgs.append(msg)
    return sorted(groups.values(), key=lambda g: (g.first, g.date, g.type))
