"""The reconciler: our record (the ACCOUNT stream) against what the venue says (ADR 0014)."""
