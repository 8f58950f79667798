"""The columns of each message type's Parquet files, derived from its msgspec schema (pure).

One table per message type: the envelope every file shares (where and when the message was
stored), then the message's own fields typed from its schema, then the raw payload. The same
description serves the writer (how to read a batch's rows and cast them) and the views (an
empty view over a type that has no file yet still has the right columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import msgspec
from msgspec import inspect as mi

from schemas.codec import ALL_TYPES

Kind = Literal["decimal", "int", "time", "str", "bool", "float", "json", "blob"]

# DECIMAL(38,12): a 128-bit exact decimal with 26 integer digits (any price, amount or balance)
# and 12 fractional ones (a satoshi is 8; rates and fees have fewer). Not (38,18): DuckDB adds
# the scales of a product, so price * amount of two (38,18) columns is a (38,36) with 2 integer
# digits, and overflows at 100; with (38,12) it is a (38,24), exact up to 1e14. A value with more
# fractional digits is rounded to 12, one out of range is NULL in its typed column, never an error
# (the flush must not fail on a hostile number): `raw` keeps every value exactly as published.
DECIMAL = "DECIMAL(38,12)"
UNDECODED = "undecoded"  # the payload did not decode: raw bytes and the codec's reason
UNTYPED = "untyped"  # decoded, but DuckDB refused its typed row (never seen; kept raw, not lost)

# The envelope: columns every file has, first, in this order.
ENVELOPE: tuple[tuple[str, str], ...] = (
    ("stream", "VARCHAR"),
    ("seq", "BIGINT"),
    ("subject", "VARCHAR"),
    ("stored_at", "TIMESTAMP"),  # JetStream's store time (server clock), UTC
    ("msg_id", "VARCHAR"),  # Nats-Msg-Id
    ("type", "VARCHAR"),  # the message's tag, or `undecoded`
)
TAIL: tuple[tuple[str, str], ...] = (
    ("headers", "JSON"),  # the NATS headers other than Nats-Msg-Id (a DLQ's reason), else NULL
    ("raw", "VARCHAR"),  # the payload as JSON text
)
# A message field named like an envelope column is renamed `msg_<name>` (GapMarker.stream).
RESERVED = frozenset(name for name, _ in ENVELOPE + TAIL) | {"date", "stored_ns"}
_SQL = {"decimal": DECIMAL, "int": "BIGINT", "str": "VARCHAR", "bool": "BOOLEAN", "float": "DOUBLE", "json": "JSON", "blob": "BLOB"}
# Earliest and latest instants a TIMESTAMP column takes from an int ms (years 1..9999).
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999


@dataclass(frozen=True)
class Column:
    name: str  # in the Parquet file, and the key in the row JSON the writer reads
    key: str  # in the message as encoded (differs from `name` when renamed)
    kind: Kind

    def sql_types(self) -> list[tuple[str, str]]:
        """(column, DuckDB type) this field becomes: a time is a TIMESTAMP and its int ms."""
        if self.kind == "time":
            return [(self.name, "TIMESTAMP"), (f"{self.name}_ms", "BIGINT")]
        return [(self.name, _SQL[self.kind])]


def is_time(name: str) -> bool:
    """Integer milliseconds since the epoch, by the project's naming (durations end in `_ms`)."""
    return name in ("ts", "ts_local", "since", "until") or name.endswith("_time") or name.endswith("_ts")


def _kind(name: str, t: mi.Type) -> Kind:
    if isinstance(t, mi.UnionType):  # `X | None`: the column is nullable anyway
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(inner) == 1:
            return _kind(name, inner[0])
        return "json"
    if isinstance(t, mi.DecimalType):
        return "decimal"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "time" if is_time(name) else "int"
    if isinstance(t, mi.FloatType):
        return "float"
    if isinstance(t, mi.StrType):
        return "str"
    if isinstance(t, mi.LiteralType):
        return "str" if all(isinstance(v, str) for v in t.values) else "json"
    return "json"  # lists, dicts, nested structs


@lru_cache(maxsize=None)
def columns_of(tag: str) -> tuple[Column, ...]:
    """The message's own columns (not the envelope), in schema order; the tag is `type`."""
    if tag in (UNDECODED, UNTYPED):
        return (Column("error", "error", "str"), Column("raw_bytes", "raw_bytes", "blob"))
    cls = TYPES[tag]
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    out = []
    for f in info.fields:
        name = f"msg_{f.name}" if f.name in RESERVED else f.name
        out.append(Column(name, f.encode_name, _kind(f.name, f.type)))
    return tuple(out)


def schema_of(tag: str) -> list[tuple[str, str]]:
    """Every (column, DuckDB type) of a type's files, in file order."""
    cols = [c for col in columns_of(tag) for c in col.sql_types()]
    return [*ENVELOPE, *cols, *TAIL]


def tag_of(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


TYPES: dict[str, type[msgspec.Struct]] = {tag_of(c): c for c in ALL_TYPES}


def empty_select(tags: tuple[str, ...]) -> str:
    """A SELECT with the columns of these types' files and no rows (a view before any file)."""
    seen: dict[str, str] = {}
    for tag in tags:
        for name, sql in schema_of(tag):
            seen.setdefault(name, sql)
    cols = ", ".join(f"CAST(NULL AS {sql}) AS {quote(name)}" for name, sql in seen.items())
    return f"SELECT {cols}, CAST(NULL AS DATE) AS date WHERE false"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def select_list(tag: str) -> tuple[dict[str, str], str]:
    """(read_json columns, SELECT list) turning a row file of this type into its typed columns.

    Numbers are read as text and cast with TRY_CAST, so one out-of-range value becomes NULL in
    its column instead of failing the whole batch."""
    read: dict[str, str] = {"stream": "VARCHAR", "seq": "BIGINT", "subject": "VARCHAR", "stored_ns": "BIGINT", "msg_id": "VARCHAR"}
    read["type"] = "VARCHAR"
    exprs = [
        "stream",
        "seq",
        "subject",
        "make_timestamp(stored_ns // 1000) AS stored_at",
        "msg_id",
        "type",
    ]
    for col in columns_of(tag):
        src = quote(col.name)
        if col.kind == "decimal":
            read[col.name] = "VARCHAR"
            exprs.append(f"TRY_CAST({src} AS {DECIMAL}) AS {quote(col.name)}")
        elif col.kind == "int":
            read[col.name] = "VARCHAR"
            exprs.append(f"TRY_CAST({src} AS BIGINT) AS {quote(col.name)}")
        elif col.kind == "time":
            read[col.name] = "VARCHAR"
            ms = f"TRY_CAST({src} AS BIGINT)"
            exprs.append(f"CASE WHEN {ms} BETWEEN {MIN_MS} AND {MAX_MS} THEN epoch_ms({ms}) END AS {quote(col.name)}")
            exprs.append(f"{ms} AS {quote(col.name + '_ms')}")
        elif col.kind == "blob":
            read[col.name] = "VARCHAR"  # base64 in the row JSON (msgspec's encoding of bytes)
            exprs.append(f"from_base64({src}) AS {quote(col.name)}")
        else:
            read[col.name] = _SQL[col.kind]
            exprs.append(f"{src} AS {quote(col.name)}")
    read["headers"] = "JSON"
    read["raw"] = "VARCHAR"
    exprs += ["headers", "raw"]
    return read, ", ".join(exprs)


def describe(value: Any) -> str:
    """A short, bounded text of an exception for the `error` column."""
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."
