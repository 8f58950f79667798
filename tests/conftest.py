"""The suite's fixtures come from the test kit: a real nats-server with JetStream per test."""

from __future__ import annotations

pytest_plugins = ["testkit.bus"]
