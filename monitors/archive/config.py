"""Settings of the archive (the `[archive]` table)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bus.streams import STREAMS

ALL_STREAMS = [s.name for s in STREAMS]


class ArchiveConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    directory: str = ""  # empty: <data_dir>/archive
    batch_size: int = 5_000  # a stream's batch is written once it holds this many messages ...
    flush_seconds: float = 5.0  # ... or its oldest message has waited this long
    streams: list[str] = msgspec.field(default_factory=lambda: list(ALL_STREAMS))
    compression: str = "zstd"
    metrics_port: int = 9112  # /metrics, /health, /status; 0 = off

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError("`batch_size` must be positive")
        if not 0 < self.flush_seconds <= 600:
            raise ValueError("`flush_seconds` must be above 0 and at most 600")
        unknown = [s for s in self.streams if s not in ALL_STREAMS]
        if unknown:
            raise ValueError(f"`streams`: unknown {', '.join(unknown)} (known: {', '.join(ALL_STREAMS)})")
        if len(set(self.streams)) != len(self.streams):
            raise ValueError("`streams` names a stream twice")
        if self.compression not in ("zstd", "snappy", "gzip", "uncompressed"):
            raise ValueError("`compression` must be zstd, snappy, gzip or uncompressed")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("`metrics_port` must be a TCP port (0 = off)")

    def root(self, data_dir: str) -> Path:
        """Where the archive is: `directory`, or `<data_dir>/archive`."""
        return Path(self.directory) if self.directory else Path(data_dir) / "archive"
