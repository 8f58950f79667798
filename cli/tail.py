"""`sqt tail`: events as they happen, one line each (or raw JSON), optionally from history."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

from bus import process
from bus.connection import Unreachable, connect
from bus.reader import read_stream
from cli.config import Config, parse_duration

_SKIP = {"type", "id", "venue", "symbol", "ts", "ts_local"}


def one_line(subject: str, data: bytes) -> str:
    """`HH:MM:SS.mmm subject type key=value ...`, for people reading a terminal."""
    try:
        doc = json.loads(data)
    except ValueError:
        return f"{'?':12} {subject} (not JSON: {data[:80]!r})"
    if not isinstance(doc, dict):
        return f"{'?':12} {subject} {doc!r}"
    ts = doc.get("ts")
    stamp = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3] if isinstance(ts, int) else "?"
    fields = " ".join(f"{k}={_short(v)}" for k, v in doc.items() if k not in _SKIP and v is not None)
    return f"{stamp} {subject} {doc.get('type', '?')} {fields}"


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def tail(config: Config, args: argparse.Namespace) -> int:
    async def main(stop: asyncio.Event) -> None:
        try:
            nc = await connect(config.nats_url, name="sqt-tail", attempts=3, role="operator")
        except Unreachable as exc:
            print(f"sqt: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        shown = 0

        def show(subject: str, data: bytes) -> bool:
            nonlocal shown
            if args.limit is not None and shown >= args.limit:
                return True
            print(data.decode(errors="replace") if args.json else one_line(subject, data), flush=True)
            shown += 1
            return args.limit is not None and shown >= args.limit

        try:
            if args.since or args.seq is not None:
                js = nc.jetstream()
                stream = await js.find_stream_name_by_subject(args.subject)
                start_time = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(args.since)) if args.since else None
                reader = read_stream(nc, stream, start_seq=args.seq, start_time=start_time, subjects=(args.subject,), follow=True)
                reading = asyncio.ensure_future(_drain(reader, show, stop))
                await asyncio.wait({reading, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
                reading.cancel()
            else:
                done = asyncio.Event()

                async def on_msg(msg) -> None:
                    if show(msg.subject, msg.data):
                        done.set()

                await nc.subscribe(args.subject, cb=on_msg)
                await asyncio.wait(
                    {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())}, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            await nc.close()

    return process.run("sqt-tail", main)


async def _drain(reader, show, stop: asyncio.Event) -> None:
    async for batch in reader:
        for m in batch:
            if show(m.subject, m.data):
                stop.set()
                return
