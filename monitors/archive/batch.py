"""A batch of stored messages as rows, grouped into files; file names and high-water marks (pure).

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

from monitors.archive.columns import RESERVED, TYPES, UNDECODED, describe
from schemas.codec import DecodeError, decode

NAME = re.compile(r"^([a-z][a-z0-9_]*)-(\d{20})-(\d{20})\.parquet$")
MSG_ID = "Nats-Msg-Id"

# Message fields renamed because an envelope column has their name (GapMarker.stream).
_RENAMED: dict[str, tuple[tuple[str, str], ...]] = {
    tag: tuple((f.encode_name, f"msg_{f.name}") for f in msgspec.structs.fields(cls) if f.name in RESERVED) for tag, cls in TYPES.items()
}


@dataclass(frozen=True)
class Stored:
    """One delivered message: what the archive keeps of it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None
    stored_ns: int


@dataclass
class Group:
    """The rows of one file: one stream, one day, one type."""

    stream: str
    date: str
    type: str
    first: int
    last: int
    rows: list[dict[str, Any]] = field(default_factory=list)

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


def day_of(stored_ns: int) -> str:
    """The UTC day of a store time: the partition a message's row goes to."""
    # Whole seconds by integer division: ns / 1e9 as a float rounds 23:59:59.999999999 up.
    return dt.datetime.fromtimestamp(stored_ns // 1_000_000_000, dt.timezone.utc).strftime("%Y-%m-%d")


def row_of(stream: str, msg: Stored) -> tuple[str, dict[str, Any]]:
    """(type, row) of one message, decoded by the project's codec; a payload that does not
    decode (or validate) is an `undecoded` row with the codec's reason and the exact bytes."""
    headers = msg.headers or {}
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
    row["stored_ns"] = msg.stored_ns
    row["msg_id"] = headers.get(MSG_ID)
    row["headers"] = extra
    return row["type"], row


def group(stream: str, msgs: Iterable[Stored]) -> list[Group]:
    """The files a batch makes: one per (day, type), each with its first and last sequence,
    in the order of their first sequence."""
    groups: dict[tuple[str, str], Group] = {}
    for msg in msgs:
        tag, row = row_of(stream, msg)
        key = (day_of(msg.stored_ns), tag)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(stream, key[0], tag, msg.seq, msg.seq)
        g.first = min(g.first, msg.seq)
        g.last = max(g.last, msg.seq)
        g.rows.append(row)
    return sorted(groups.values(), key=lambda g: (g.first, g.date, g.type))
