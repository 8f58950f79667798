"""Backup and restore of JetStream streams (and KV buckets, which are streams named `KV_<bucket>`).

We use JetStream's own snapshot/restore API rather than copying messages one by one: the server
hands over its stream files (an s2-compressed tar), so a restore keeps every message's sequence,
timestamp, headers and the gaps of deleted messages exactly, and rebuilds the dedupe window from
the `Nats-Msg-Id` headers. A republish is nothing of the kind: it gets new times and cannot
leave a gap. nats-py has no wrapper for this API, so the protocol (as natscli / jsm.go speak
it) is implemented here with raw requests:

- snapshot: request `$JS.API.STREAM.SNAPSHOT.<stream>` with a deliver subject; the server sends
  chunks there, some with a reply subject that must be answered (its flow control), and ends with
  an empty message whose status is 204 (anything else is an error, described in a header).
- restore: request `$JS.API.STREAM.RESTORE.<stream>` with the saved config and state; the answer
  names a subject to send the chunks to, each as a request; an empty request ends it and is
  answered with the created stream (or an error).

Layout of a backup directory (each stream's directory is what `nats stream backup` writes, so
`nats stream restore DIR/<stream>` reads it too):

    DIR/manifest.json              what is in it; written last, so a backup without one is incomplete
    DIR/<stream>/backup.json       {"config": ..., "state": ...} as the server reported them
    DIR/<stream>/stream.tar.s2     the snapshot, byte for byte as the server sent it
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client

from bus.errors import BusError

FORMAT = "sqt-backup/1"
MANIFEST = "manifest.json"
META_FILE = "backup.json"
DATA_FILE = "stream.tar.s2"
KV_PREFIX = "KV_"

SNAPSHOT_CHUNK = 128 * 1024  # what natscli asks for
RESTORE_CHUNK = 64 * 1024  # what natscli sends; well under the server's max_payload
API_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0  # no chunk for this long: the snapshot is stuck (the server gives up on us after 2 s)
FINISH_TIMEOUT = 600.0  # the server unpacks and checks the whole stream before it answers the last chunk


class Refused(BusError):
    """Not done because of what was asked: a name that is not there, a stream in the way, a
    non-empty directory (the CLI's exit 2)."""


class BackupFailed(BusError):
    """Started and could not finish: the server said no, a file is damaged (exit 1)."""


class ApiError(BackupFailed):
    """JetStream's API answered with an error; `code` is its `err_code` (10059: no such stream)."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


STREAM_NOT_FOUND = 10059


@dataclass(frozen=True)
class Summary:
    """One stream's line in the report: what the backup holds, or what the restore made."""

    stream: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    file_bytes: int

    @property
    def label(self) -> str:
        return f"kv:{self.stream[len(KV_PREFIX) :]}" if self.stream.startswith(KV_PREFIX) else self.stream

    def line(self) -> str:
        # An empty stream still has a last sequence (purged, expired): its next message follows it.
        seqs = f"seq {self.first_seq}..{self.last_seq}" if self.messages else f"empty, last seq {self.last_seq}"
        return f"{self.label:20} {self.messages:>9} msgs {self.bytes:>12} bytes  {seqs}  ({self.file_bytes} bytes on disk)"


def _summary(stream: str, state: dict[str, Any], file_bytes: int) -> Summary:
    return Summary(
        stream=stream,
        messages=int(state.get("messages", 0)),
        bytes=int(state.get("bytes", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        file_bytes=file_bytes,
    )


async def _api(nc: Client, subject: str, payload: dict[str, Any] | None = None, timeout: float = API_TIMEOUT) -> dict[str, Any]:
    """A JetStream API request with raw JSON both ways (the configs stay exactly as the server
    wrote them: nanosecond durations, fields nats-py does not know)."""
    try:
        msg = await nc.request(subject, json.dumps(payload).encode() if payload is not None else b"", timeout=timeout)
    except nats.errors.NoRespondersError:
        raise BackupFailed("JetStream is not enabled on this server (no answer on the API)") from None
    except nats.errors.TimeoutError:
        raise BackupFailed(f"JetStream did not answer {subject} within {timeout:g}s") from None
    reply: dict[str, Any] = json.loads(msg.data)
    if "error" in reply:
        err = reply["error"]
        raise ApiError(f"{subject}: {err.get('description', err)}", int(err.get("err_code", 0)))
    return reply


async def stream_names(nc: Client) -> list[str]:
    """Every stream on the server (the names API pages by 1024)."""
    names: list[str] = []
    while True:
        page = await _api(nc, "$JS.API.STREAM.NAMES", {"offset": len(names)})
        got = page.get("streams") or []
        names += got
        if not got or len(names) >= int(page.get("total", 0)):
            return sorted(names)


async def stream_info(nc: Client, stream: str) -> dict[str, Any] | None:
    """The stream's info, None if there is no such stream."""
    try:
        return await _api(nc, f"$JS.API.STREAM.INFO.{stream}")
    except ApiError as exc:
        if exc.code == STREAM_NOT_FOUND:
            return None
        raise


def _pick(wanted: list[str] | None, available: list[str], where: str) -> list[str]:
    """The stream names asked for, in the order asked; a bucket may be named without `KV_`."""
    if not wanted:
        return available
    picked: list[str] = []
    for name in wanted:
        match = name if name in available else KV_PREFIX + name if KV_PREFIX + name in available else None
        if match is None:
            raise Refused(f"no stream or bucket named {name!r} {where}")
        if match not in picked:
            picked.append(match)
    return picked


def _server_version(nc: Client) -> str:
    v = nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}" + (f"-{v.dev}" if v.dev else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def snapshot_stream(
    nc: Client,
    stream: str,
    data_file: Path,
    *,
    consumers: bool = False,
    chunk_size: int = SNAPSHOT_CHUNK,
    window_size: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Write the stream's snapshot to `data_file`; the server's {"config", "state"} at that
    moment, and the file's SHA-256.

    `window_size` is how much the server sends before it waits for our flow-control answer
    (its default, 8 MiB, when None); tests make it small to run that path on a small stream."""
    inbox = nc.new_inbox()
    request: dict[str, Any] = {"deliver_subject": inbox, "chunk_size": chunk_size, "no_consumers": not consumers, "jsck": False}
    if window_size is not None:
        request["window_size"] = window_size
    sub = await nc.subscribe(inbox)  # subscribed before asking: the first chunk may beat the answer
    try:
        reply = await _api(nc, f"$JS.API.STREAM.SNAPSHOT.{stream}", request)
        digest = hashlib.sha256()  # as it is written: no second read for the manifest
        with data_file.open("wb") as out:
            while True:
                try:
                    msg = await sub.next_msg(timeout=IDLE_TIMEOUT)
                except nats.errors.TimeoutError:
                    raise BackupFailed(f"snapshot of {stream}: no data from the server for {IDLE_TIMEOUT:g}s") from None
                if not msg.data:
                    status = (msg.headers or {}).get("Status", "")
                    if status and status != "204":
                        why = (msg.headers or {}).get("Description", "")
                        raise BackupFailed(f"snapshot of {stream} failed: {status} {why}".rstrip())
                    break
                # Answer the flow control before writing: the server stops (and fails the
                # snapshot) when a window is not acknowledged in time.
                if msg.reply:
                    await nc.publish(msg.reply, b"")
                out.write(msg.data)
                digest.update(msg.data)
    finally:
        await sub.unsubscribe()
    return {"config": reply["config"], "state": reply["state"]}, digest.hexdigest()


def check_target(directory: Path, force: bool) -> None:
    """Refuse a directory we could mix a backup into (--force: the operator means it)."""
    if directory.exists() and not directory.is_dir():
        raise Refused(f"{directory} is not a directory")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise Refused(f"{directory} is not empty (--force writes into it anyway)")


async def backup(
    nc: Client,
    directory: Path,
    names: list[str] | None = None,
    *,
    force: bool = False,
    consumers: bool = False,
    say: Callable[[str], None] = lambda _: None,
    chunk_size: int = SNAPSHOT_CHUNK,
    window_size: int | None = None,
) -> list[Summary]:
    """Snapshot every stream on the server (or the named ones) into `directory`."""
    check_target(directory, force)
    chosen = _pick(names, await stream_names(nc), "on the server")
    directory.mkdir(parents=True, exist_ok=True)
    # An old manifest must not describe a half-overwritten directory if this run fails.
    (directory / MANIFEST).unlink(missing_ok=True)
    entries, summaries = [], []
    for stream in chosen:
        sdir = directory / stream
        sdir.mkdir(exist_ok=True)
        data_file = sdir / DATA_FILE
        meta, sha256 = await snapshot_stream(nc, stream, data_file, consumers=consumers, chunk_size=chunk_size, window_size=window_size)
        (sdir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        summary = _summary(stream, meta["state"], data_file.stat().st_size)
        entries.append(
            {
                "stream": stream,
                "bucket": stream[len(KV_PREFIX) :] if stream.startswith(KV_PREFIX) else None,
                "dir": stream,
                "data_file": f"{stream}/{DATA_FILE}",
                "sha256": sha256,
                "size": summary.file_bytes,
                "config": meta["config"],
                "state": meta["state"],
            }
        )
        summaries.append(summary)
        say(summary.line())
    manifest = {
        "format": FORMAT,
        "method": "jetstream-snapshot",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "server_version": _server_version(nc),
        "consumers": consumers,
        "streams": entries,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return summaries


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise Refused(f"{path} not found: not a backup, or one that did not finish")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise BackupFailed(f"{path} is not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise Refused(f"{path}: format {manifest.get('format')!r}, this sqt reads {FORMAT!r}")
    return manifest


async def restore_stream(nc: Client, entry: dict[str, Any], data_file: Path) -> dict[str, Any]:
    """Send one snapshot to the server; the created stream's state."""
    stream = entry["stream"]
    start = await _api(nc, f"$JS.API.STREAM.RESTORE.{stream}", {"config": entry["config"], "state": entry["state"]})
    target = start["deliver_subject"]
    try:
        with data_file.open("rb") as f:
            for chunk in iter(lambda: f.read(RESTORE_CHUNK), b""):
                ack = await nc.request(target, chunk, timeout=API_TIMEOUT)
                if ack.data:  # an ack is empty; anything else is the server giving up
                    raise BackupFailed(f"restore of {stream} refused a chunk: {ack.data.decode(errors='replace')}")
        done = await nc.request(target, b"", timeout=FINISH_TIMEOUT)
    except nats.errors.TimeoutError:
        raise BackupFailed(f"restore of {stream}: the server stopped answering") from None
    reply: dict[str, Any] = json.loads(done.data)
    if "error" in reply:
        why = str(reply["error"].get("description", reply["error"])).removeprefix("restore failed: ")
        raise BackupFailed(f"restore of {stream} failed: {why}")
    state: dict[str, Any] = reply["state"]
    return state


async def restore(
    nc: Client,
    directory: Path,
    names: list[str] | None = None,
    *,
    replace: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> list[Summary]:
    """Restore the backup's streams (or the named ones) into a server where they do not exist.

    Everything is checked before anything changes: every file against its checksum, and no
    chosen stream may exist unless `replace` (then each is deleted just before its restore,
    after `say` has named all of them)."""
    manifest = read_manifest(directory)
    by_name = {e["stream"]: e for e in manifest["streams"]}
    chosen = _pick(names, list(by_name), f"in {directory / MANIFEST}")
    # Origins before the streams that source or mirror them, so those find them there.
    chosen.sort(key=lambda s: bool(by_name[s]["config"].get("sources") or by_name[s]["config"].get("mirror")))
    for stream in chosen:
        data_file = directory / by_name[stream]["data_file"]
        if not data_file.is_file():
            raise BackupFailed(f"{data_file} is missing")
        if _sha256(data_file) != by_name[stream]["sha256"]:
            raise BackupFailed(f"{data_file} is damaged: its checksum differs from the manifest's")
    existing = {s: info for s in chosen if (info := await stream_info(nc, s)) is not None}
    if existing and not replace:
        these = f"streams {', '.join(existing)} already exist" if len(existing) > 1 else f"stream {next(iter(existing))} already exists"
        raise Refused(f"{these} on the server (--replace deletes it first)")
    for stream, info in existing.items():
        state = info.get("state", {})
        say(
            f"replacing {stream}: {state.get('messages', 0)} msgs, seq {state.get('first_seq', 0)}..{state.get('last_seq', 0)} "
            "on the server now will be deleted"
        )
    summaries = []
    for stream in chosen:
        if stream in existing:
            await _api(nc, f"$JS.API.STREAM.DELETE.{stream}")
        data_file = directory / by_name[stream]["data_file"]
        state = await restore_stream(nc, by_name[stream], data_file)
        summary = _summary(stream, state, data_file.stat().st_size)
        summaries.append(summary)
        say(summary.line())
    return summaries
