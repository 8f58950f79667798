"""The archive's Prometheus metrics (bounded labels: stream, type, reason)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

ROWS = Counter("sqt_archive_rows_total", "Rows committed to Parquet files, by stream and type", ["stream", "type"], registry=REGISTRY)
FILES = Counter("sqt_archive_files_total", "Parquet files committed", ["stream"], registry=REGISTRY)
BYTES = Counter("sqt_archive_bytes_total", "Bytes of Parquet files committed", ["stream"], registry=REGISTRY)
FLUSH_SECONDS = Histogram(
    "sqt_archive_flush_seconds",
    "One batch: rows built, files written and fsynced, committed (renamed)",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
ERRORS = Counter(
    "sqt_archive_errors_total",
    "Failures: a flush that failed (its batch is read again), rows kept untyped, messages gone from the stream before archived",
    ["stream", "reason"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "sqt_archive_redelivered_total",
    "Messages read again (a read restarted behind the session): not taken twice",
    ["stream"],
    registry=REGISTRY,
)
HIGH_WATER = Gauge("sqt_archive_high_water_seq", "The last stream sequence committed to a file", ["stream"], registry=REGISTRY)
LAG = Gauge("sqt_archive_lag_messages", "Messages stored in the stream but not yet committed to a file", ["stream"], registry=REGISTRY)
