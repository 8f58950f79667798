"""The `sqt` command."""
