"""Durable, atomic commits of a batch's files for one stream (the I/O half of the archive).

A commit (ADR 0022):
1. each group's rows go to a scratch JSON file, which DuckDB reads, types (columns.py) and
   copies to `<dir>/.<name>.tmp` beside its final name; the file is fsynced;
2. the manifest `<STREAM>/.commit` (temp name, fsync, rename, fsync) lists every rename;
3. every temp file is renamed to its `.parquet` name and the directories are fsynced;
4. the manifest is removed.
Only then does the archive count the batch as done. `recover()` at start rolls a manifest
forward (its files are complete and durable) and deletes any other temp or scratch file (a
commit that had not reached step 2: its messages are read again). So the files of a
batch appear all or none, and the highest sequence in the file names is the high-water mark.
Readers glob `*.parquet`: a temp name never matches.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import msgspec

from monitors.archive.batch import Group, high_water, parse_name, row_of
from monitors.archive.columns import UNDECODED, UNTYPED, select_list
from monitors.archive.metrics import ERRORS

log = logging.getLogger("archive")

MANIFEST = ".commit"
SCRATCH = ".scratch"
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int
    bytes: int


@dataclass
class Holdings:
    """What a stream's directory holds, read at start."""

    high_water: int = 0
    files: int = 0
    bytes: int = 0


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StreamWriter:
    """Writes and commits the files of one stream's batches; one flush at a time."""

    def __init__(self, root: Path, stream: str, compression: str = "zstd") -> None:
        self.root = root
        self.stream = stream
        self.dir = root / stream
        self.scratch = root / SCRATCH
        self.compression = compression
        self.db = duckdb.connect(":memory:")  # no database file: nothing a reader could be locked out of
        self.db.execute("SET threads TO 2")  # five streams flush at once; leave cores to the rest
        # A flush runs in a worker thread; a stop may abandon the coroutine awaiting it while the
        # thread goes on. The lock keeps a later recover() from meeting a commit half done.
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ start

    def recover(self) -> Holdings:
        """Finish or undo what a killed process left, then read the high-water mark."""
        with self.lock:
            return self._recover()

    def _recover(self) -> Holdings:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / MANIFEST
        if manifest.exists():
            self._roll_forward(manifest)
        stale = self.dir / (MANIFEST + ".tmp")
        if stale.exists():
            stale.unlink()
        for tmp in self.dir.glob("date=*/.*.tmp"):
            log.info("%s: removing %s (a commit that never happened; its messages are read again)", self.stream, tmp.name)
            tmp.unlink()
        for tmp in self.scratch.glob(f"{self.stream}-*"):
            tmp.unlink()
        files = [p for p in self.dir.glob("date=*/*.parquet") if parse_name(p.name) is not None]
        return Holdings(high_water(p.name for p in files), len(files), sum(p.stat().st_size for p in files))

    def _roll_forward(self, manifest: Path) -> None:
        renames = json.loads(manifest.read_text())
        for tmp_name, final_name in renames:
            tmp, final = self.dir / tmp_name, self.dir / final_name
            if tmp.exists():
                os.replace(tmp, final)
            elif not final.exists():
                # Cannot happen unless someone deleted it: the manifest is written only after
                # every temp file is durable. Say so loudly; the high-water mark stays honest
                # about the files that are there.
                log.error("%s: commit manifest names %s, which is gone", self.stream, tmp_name)
        for parent in {(self.dir / f).parent for _, f in renames}:
            fsync_path(parent)
        manifest.unlink()
        fsync_path(self.dir)
        log.info("%s: completed an interrupted commit of %d files", self.stream, len(renames))

    def high_water(self) -> int:
        return high_water(p.name for p in self.dir.glob("date=*/*.parquet"))

    # ------------------------------------------------------------------ commit

    def commit(self, groups: list[Group]) -> list[Written]:
        """Write every group to its file and make them all visible at once (durably)."""
        with self.lock:
            return self._commit(groups)

    def _commit(self, groups: list[Group]) -> list[Written]:
        if not groups:
            return []
        staged: list[tuple[Path, Path, int]] = []
        for g in groups:
            directory = self.root / g.directory
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / g.name
            tmp = directory / f".{g.name}.tmp"
            try:
                self._write(g, tmp)
            except TypedWriteFailed as exc:
                g = untyped(g, str(exc))
                final = directory / g.name
                tmp = directory / f".{g.name}.tmp"
                self._write(g, tmp)
            fsync_path(tmp)
            staged.append((tmp, final, len(g.lines)))
        manifest = self.dir / MANIFEST
        pending = self.dir / (MANIFEST + ".tmp")
        pending.write_text(json.dumps([[str(t.relative_to(self.dir)), str(f.relative_to(self.dir))] for t, f, _ in staged]))
        fsync_path(pending)
        for parent in {t.parent for t, _, _ in staged}:
            fsync_path(parent)  # the temp files' names are durable before the manifest names them
        os.replace(pending, manifest)
        fsync_path(self.dir)
        out = []
        for tmp, final, rows in staged:
            os.replace(tmp, final)
            out.append(Written(final, rows, final.stat().st_size))
        for parent in {f.parent for _, f, _ in staged}:
            fsync_path(parent)
        manifest.unlink()
        fsync_path(self.dir)
        return out

    def _write(self, g: Group, target: Path) -> None:
        scratch = self.scratch / f"{self.stream}-{g.date}-{g.type}-{g.first}-{time.monotonic_ns()}.json"
        scratch.write_bytes(b"\n".join(g.lines))
        try:
            read, select = select_list(g.type)
            try:
                self._copy(scratch, read, select, target)
            except duckdb.Error as exc:
                if g.type in (UNDECODED, UNTYPED):
                    raise
                # Belt and braces: the typed read cannot fail on a value (numbers are TRY_CAST),
                # but if it ever does, the rows are still archived, untyped, rather than block
                # the stream forever. The error is counted (metrics) and logged.
                log.error("%s: typed write of %s failed (%s); archiving these rows untyped", self.stream, g.name, exc)
                ERRORS.labels(self.stream, "untyped").inc(len(g.lines))
                raise TypedWriteFailed(str(exc)) from exc
        finally:
            scratch.unlink(missing_ok=True)

    def _copy(self, scratch: Path, read: dict[str, str], select: str, target: Path) -> None:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in read.items()) + "}"
        self.db.execute(
            f"COPY (SELECT {select} FROM read_json('{_sql_path(scratch)}', format='newline_delimited', "
            f"columns={columns}, maximum_object_size=268435456)) "
            f"TO '{_sql_path(target)}' (FORMAT parquet, COMPRESSION {self.compression})"
        )


def untyped(g: Group, error: str) -> Group:
    """The same messages as `untyped` rows: envelope, the reason, the payload (no typed columns)."""
    out = Group(g.stream, g.date, UNTYPED, g.first, g.last, msgs=list(g.msgs))
    for msg in g.msgs:
        _, row = row_of(g.stream, msg)
        row.update(type=UNTYPED, error=error[:500], raw_bytes=msg.data, raw=msg.data.decode("utf-8", errors="replace"))
        out.lines.append(_encode(row))
    return out


class TypedWriteFailed(Exception):
    """DuckDB refused a typed group (should not happen; the rows go untyped instead)."""


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
