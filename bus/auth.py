"""Who may do what on the bus: one NATS user per role, each with only the subjects it needs.

The roles and their rights are data here, rendered into the server's config (`nats.conf`,
the embedded server's and the cluster nodes' config, by `bus.embedded.server_config`). The
config names each password as an environment variable (`$SQT_NATS_PASSWORD_<ROLE>`), so no
password is ever in a config file: `sqt auth init` writes them into a credentials file
(KEY=VALUE lines, mode 0600, under data/, never committed) that the server's environment and
the clients read.

A client finds its password by its role (`connect(..., role="executor")`): from
`SQT_NATS_USER`/`SQT_NATS_PASSWORD` when set (docker-compose gives each service only its own),
else from the credentials file (`SQT_NATS_CREDENTIALS`, default `data/nats-auth.env`).

Every role gets its own inbox prefix (`_INBOX_<role>`) and may subscribe only to its own, so
no role reads another's replies; components answer requests through `allow_responses`, which
lets them publish a reply only to a request they received. What one account cannot confine
(the server's own JetStream API answers to any reply subject) is in docs/adr/0026.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from schemas.subjects import matches

CREDENTIALS_ENV = "SQT_NATS_CREDENTIALS"
USER_ENV = "SQT_NATS_USER"
PASSWORD_ENV = "SQT_NATS_PASSWORD"
DEFAULT_CREDENTIALS = Path("data") / "nats-auth.env"

# Reading a stream through a consumer of its own, as bus/reader.py does (the gateway, the
# archive): stream info, message get, an ephemeral push consumer (`CONSUMER.CREATE.<stream>`,
# one token: never a named one, which would reach a durable), its flow control. No pull, no ack:
# a reader cannot take or acknowledge another's messages.
_READ = (
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.FC.>",
)
# A consumer with a durable name and a lease (bus/consumer.py, bus/lease.py): it recreates its
# durable consumer at the position it knows, pulls and acks, holds its lease in the registry
# bucket, keeps its checkpoint and dead-letters. Never create, update, purge or delete a stream.
_CONSUMER = (
    *_READ,
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.ACK.>",
    "$KV.registry.lease.>",
    "$KV.checkpoints.>",
    "dlq.>",
)
# Asking a component for its status (`sqt status`, the alerts' pinger): NATS micro's subjects.
_ASK_STATUS = ("$SRV.>", "sqt.status.>")
# The simulated exchange's API (venues/sim/service.py): what reads, and what changes orders.
_VENUE_READ = tuple(
    f"venue.*.api.{method}" for method in ("fetch_order", "open_orders", "positions", "balance", "ohlcv", "funding", "markets", "time")
)
_VENUE_ORDERS = tuple(f"venue.*.api.{method}" for method in ("create_order", "cancel_order", "cancel_all"))
# The archive's leases, one per stream (monitors/archive/runner.py); keys, not a wildcard.
_ARCHIVE_LEASES = tuple(f"$KV.registry.lease.archive-{name.lower()}" for name in ("MARKET", "ACCOUNT", "COMMAND", "OPS", "DLQ"))


@dataclass(frozen=True)
class Role:
    name: str
    purpose: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ()
    everything: bool = False  # the admin: streams, buckets, backups

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.name}"

    @property
    def password_variable(self) -> str:
        return f"SQT_NATS_PASSWORD_{self.name.upper()}"

    def subscribe_allow(self) -> tuple[str, ...]:
        # Every component serves its own status (NATS micro: $SRV.* and sqt.status.<component>).
        return (f"{self.inbox_prefix}.>", "$SRV.>", "sqt.status.>", *self.subscribe)


ROLES: Mapping[str, Role] = {
    r.name: r
    for r in (
        Role(
            "exchange",
            "the simulated exchange and the ccxt publishers: market data and the account's events",
            ("md.>", "acct.>", "venue.*.journal.>", "ops.sim.>", "ops.publisher.>", *_CONSUMER),
            ("venue.*.api.>",),
        ),
        Role(
            "executor",
            "places and cancels orders at a venue; publishes what the venue says",
            ("acct.>", "ops.executor.>", *_VENUE_READ, *_VENUE_ORDERS, *_CONSUMER),
        ),
        Role(
            "strategy",
            "grids, arbitrage and the funding monitor: commands and their own state",
            (
                "cmd.*.*.*.place",
                "cmd.*.*.*.cancel",
                "cmd.*.*.*.cancel_all",
                "ops.grid.>",
                "ops.arbitrage.>",
                "ops.funding.>",
                "ops.funding-monitor.>",
                "ops.registry.>",
                "ops.control.grid.>",  # a host's pause and resume of its grids (orchestration/host.py)
                "$KV.registry.>",  # the grid registry's records (orchestration/registry.py)
                *_VENUE_READ,  # a removal lists the instance's open orders (orchestration/workflow.py)
                *_CONSUMER,
            ),
        ),
        Role(
            "risk",
            "breakers: writes the breakers bucket and may cancel everything",
            ("ops.risk.>", "cmd.*.*.*.cancel_all", "$KV.breakers.>", "venue.*.api.markets", *_CONSUMER),
        ),
        Role("reconciler", "compares the venue with the ACCOUNT stream", ("ops.reconciler.>", *_VENUE_READ, *_CONSUMER)),
        Role(
            "alerts",
            "sends alerts; asks components whether they live",
            # its own bucket (monitors/alerts/store.py), by its exact name
            ("ops.alerts.>", "$KV.alerts.>", "$JS.API.STREAM.CREATE.KV_alerts", *_ASK_STATUS, *_CONSUMER),
        ),
        Role("archive", "reads every stream into Parquet; publishes nothing", (*_READ, *_ARCHIVE_LEASES)),
        # the page's controls reach grids only (gateway/control.py): never risk's reset or halt
        Role("gateway", "the web page's server: reads, and publishes grid controls only", (*_READ, "ops.control.grid.>")),
        Role(
            "operator",
            "sqt commands: controls, the registry, breaker resets, status; no stream admin",
            ("cmd.>", "ops.>", "$KV.>", *_ASK_STATUS, *_VENUE_READ, *_CONSUMER),
            ("md.>", "acct.>", "cmd.>", "ops.>", "dlq.>", "venue.>"),
        ),
        Role("admin", "streams, buckets, backups and restores", (">",), (">",), everything=True),
    )
}

# What each component runs as (sqt up's children, docker-compose's services).
COMPONENT_ROLES: Mapping[str, str] = {
    "sim": "exchange",
    "publisher": "exchange",
    "executor": "executor",
    "grid": "strategy",
    "grids": "strategy",
    "arbitrage": "strategy",
    "funding": "strategy",
    "risk": "risk",
    "reconciler": "reconciler",
    "alerts": "alerts",
    "archive": "archive",
    "gateway": "gateway",
}


class AuthError(Exception):
    """Credentials missing or unreadable, phrased for the operator."""


def _quoted(subjects: tuple[str, ...]) -> str:
    return ", ".join(f'"{s}"' for s in subjects)


def authorization_block(roles: Mapping[str, Role] = ROLES) -> str:
    """The `authorization { users = [...] }` section of a nats-server config."""
    lines = ["authorization {", "  users = ["]
    for role in roles.values():
        lines.append(f"    # {role.name}: {role.purpose}")
        if role.everything:
            lines.append(f"    {{ user: {role.name}, password: ${role.password_variable} }}")
            continue
        lines += [
            f"    {{ user: {role.name}, password: ${role.password_variable}, permissions: {{",
            f"        publish: {{ allow: [{_quoted(role.publish)}] }}",
            f"        subscribe: {{ allow: [{_quoted(role.subscribe_allow())}] }}",
            "        allow_responses: true",
            "    } }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


_configured: Path | None = None


def use_credentials(path: Path) -> None:
    """The config's credentials file for this process (`nats.credentials`, cli/main.py); the
    environment's SQT_NATS_CREDENTIALS still wins."""
    global _configured
    _configured = path


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(CREDENTIALS_ENV) or _configured or DEFAULT_CREDENTIALS)


def read_credentials(path: Path, roles: tuple[str, ...] | None = None) -> dict[str, str]:
    """The file's `SQT_NATS_PASSWORD_<ROLE>=...` lines, as {variable: password}; each of
    `roles` (default: every role, as the server needs) must be there."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AuthError(f"cannot read the NATS credentials file {path}: {exc.strerror}; create it with `sqt auth init`") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not value.strip():
            raise AuthError(f"{path} line {number}: expected NAME=value")
        out[key.strip()] = value.strip()
    wanted = [ROLES[name] for name in roles] if roles is not None else list(ROLES.values())
    missing = [r.password_variable for r in wanted if r.password_variable not in out]
    if missing:
        raise AuthError(f"{path} has no {', '.join(missing)}; run `sqt auth init --force` to write every role's password")
    return out


def init_credentials(path: Path, *, force: bool = False) -> bool:
    """Write a new password for every role; False when the file exists and `force` is not set."""
    if path.exists() and not force:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# NATS passwords, one per role (bus/auth.py); written by `sqt auth init`. Never commit this file.\n"
    write_private(path, header + new_passwords(r.password_variable for r in ROLES.values()))
    return True


def new_passwords(variables: Iterable[str]) -> str:
    """`VARIABLE=password` lines, each password new. A leading letter: nats-server parses an
    environment variable's value as a config value."""
    return "".join(f"{v}=p{secrets.token_hex(24)}\n" for v in variables)


def write_private(path: Path, text: str) -> None:
    """Replace `path` by `text`, readable by its owner only, whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ClientAuth:
    user: str | None = None
    password: str | None = None
    inbox_prefix: str = "_INBOX"
    in_url: bool = False  # the login is the URL's own (nats-py would prefer user= and password=)


def client_auth(role: str | None, environ: Mapping[str, str] | None = None, url: str | None = None) -> ClientAuth:
    """How a client of `role` logs in: a `user:password@` in the URL first, then the
    environment's user, then the credentials file.

    No credentials anywhere means no login (a server without authorization accepts that, and
    one with it refuses the connection with "Authorization Violation")."""
    env = os.environ if environ is None else environ
    for server in (url or "").split(","):
        named = urlparse(server.strip()).username
        if named:
            known = ROLES.get(named)
            return ClientAuth(named, None, known.inbox_prefix if known else "_INBOX", in_url=True)
    user, password = env.get(USER_ENV), env.get(PASSWORD_ENV)
    if user and password:
        known = ROLES.get(user)
        return ClientAuth(user, password, known.inbox_prefix if known else "_INBOX")
    if role is None:
        return ClientAuth()
    if role not in ROLES:
        raise AuthError(f"unknown NATS role {role!r} (known: {', '.join(ROLES)})")
    path = credentials_path(env)
    if not path.exists():
        return ClientAuth()
    r = ROLES[role]
    return ClientAuth(role, read_credentials(path, (role,))[r.password_variable], r.inbox_prefix)


def may_publish(user: str | None, subject: str) -> bool:
    """Whether `user` may publish to `subject` (None: a server without users, where anyone may)."""
    if user is None:
        return True
    role = ROLES.get(user)
    return role is not None and (role.everything or any(matches(subject, pattern) for pattern in role.publish))


def may_administer(user: str | None) -> bool:
    """Creating and updating streams: the admin, or anyone on a server without users."""
    return user is None or (user in ROLES and ROLES[user].everything)
