"""The bus layer's errors, under one root, so a caller can tell "the bus said no" from a bug.

Each is raised where it is named; `except BusError` catches every failure of the bus layer
(connection, publishing, reading, consumer sessions, the embedded server, leases).
"""

from __future__ import annotations


class BusError(Exception):
    """Root of every error the bus layer raises on purpose."""


class Unreachable(BusError):
    """NATS could not be reached within the allowed attempts."""


class PublishError(BusError):
    """JetStream refused a message (no stream for the subject, limits, ...)."""


class PublishTimeout(PublishError):
    """No acknowledgement in time: the message may or may not be stored; republish it."""


class ReaderError(BusError):
    """A bulk read of a stream failed (the server refused or closed the reader connection)."""


class ReplayIncomplete(BusError):
    """A replay could not read every input it must fold: refused rather than skip one."""


class Stalled(BusError):
    """No message and no heartbeat for too long: the pull is broken; rebuild it."""


class ConsumerGone(BusError):
    """The server says the consumer was deleted."""


class RetryLater(BusError):
    """Stop this session without acking: the input is processed again after a backoff."""


class LeaseHeld(BusError):
    """Another process holds this consumer's lease (the message names it)."""


class LeaseLost(BusError):
    """This process's lease was taken by another while it ran: it stopped writing at once."""


class PortInUse(BusError):
    """A port the embedded server needs is taken."""


class ServerFailed(BusError):
    """The embedded nats-server did not start or died."""
