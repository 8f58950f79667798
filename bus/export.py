"""Stream windows as JSON lines: one stored message per line, with its stream, sequence,
subject, stored time and headers, so an incident can travel with a bug report and be replayed
on another machine exactly as it was recorded.

    {"stream": "IN_GRID_X", "seq": 42, "subject": "md.sim.BTC-USDT-USDT.ticker",
     "ts_ns": 1795412637500123456, "headers": {"Nats-Msg-Id": "..."}, "data": {...}}

`data` is the payload itself when it is a JSON object, else a string.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing
from pathlib import Path

import msgspec
from nats.aio.client import Client

from bus.contract import StoredMsg
from bus.reader import read_stream


class Line(msgspec.Struct, frozen=True):
    stream: str
    seq: int
    subject: str
    ts_ns: int
    headers: dict[str, str]
    data: msgspec.Raw


_line_decoder = msgspec.json.Decoder(Line)
_encoder = msgspec.json.Encoder()


def to_line(stream: str, m: StoredMsg) -> bytes:
    data = m.data
    raw = msgspec.Raw(data) if data[:1] == b"{" and _is_json(data) else msgspec.Raw(_encoder.encode(data.decode(errors="replace")))
    return _encoder.encode(Line(stream, m.seq, m.subject, m.ts_ns, m.headers(), raw)) + b"\n"


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


def payload(line: Line) -> bytes:
    """The message payload as it was on the bus."""
    raw = bytes(line.data)
    if raw[:1] == b'"':
        return str(msgspec.json.decode(raw)).encode()
    return raw


def stored(line: Line) -> StoredMsg:
    return StoredMsg(line.seq, line.subject, payload(line), b"", line.ts_ns)


def read_lines(path: Path) -> Iterator[Line]:
    with path.open("rb") as fh:
        for n, text in enumerate(fh, start=1):
            if text.strip():
                try:
                    yield _line_decoder.decode(text)
                except msgspec.DecodeError as exc:
                    raise ValueError(f"{path}:{n}: not an exported message ({exc})") from None


def ns(when: dt.datetime) -> int:
    return int(when.timestamp() * 1e9)


async def window(
    nc: Client,
    stream: str,
    since: dt.datetime | None,
    until: dt.datetime,
    subjects: tuple[str, ...] = (),
    start_seq: int | None = None,
) -> AsyncIterator[list[StoredMsg]]:
    """Messages of `stream` stored from `since` (or from sequence `start_seq`) up to `until`."""
    limit = ns(until)
    async with aclosing(read_stream(nc, stream, start_seq=start_seq, start_time=since, subjects=subjects)) as batches:
        async for batch in batches:
            kept = [m for m in batch if m.ts_ns <= limit]
            if kept:
                yield kept
            if len(kept) < len(batch):
                return


async def from_lines(lines: Iterable[Line], stream: str, first_seq: int = 0, until_ns: int | None = None) -> AsyncIterator[list[StoredMsg]]:
    """An exported stream's messages from `first_seq` on, as the reader would yield them."""
    batch: list[StoredMsg] = []
    for line in lines:
        if line.stream != stream or line.seq < first_seq or (until_ns is not None and line.ts_ns > until_ns):
            continue
        batch.append(stored(line))
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch
