"""The archive: every stream's messages in Parquet files, exactly once, readable while it runs (ADR 0022)."""
