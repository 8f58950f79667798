"""Least privilege on a real nats-server: each role may do its job and nothing else (bus/auth.py)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from bus import streams
from bus.auth import ROLES, AuthError, authorization_block, client_auth, init_credentials, may_publish, read_credentials
from bus.embedded import EmbeddedServer, server_config
from bus.service import register
from testkit.bus import eventually, start_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    path = tmp_path / "auth" / "nats-auth.env"
    assert init_credentials(path)
    return path


@pytest.fixture
def secured(tmp_path: Path, creds: Path) -> Iterator[EmbeddedServer]:
    server = start_server(tmp_path, credentials=creds)
    yield server
    server.stop()


class Login:
    """A client logged in as one role that records the server's refusals."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.sentinels = 0

    async def refused(self, action: str) -> bool:
        """Whether the server refused `action`, done just before. Refusals come in order but not
        before a flush's PONG, so a publish every role but the admin is refused goes after it,
        and its refusal says that the one for `action` would have come by now."""
        self.sentinels += 1
        sentinel = f"sentinel.{self.sentinels}"
        await self.nc.publish(sentinel, b"")
        await eventually(lambda: any(sentinel in e for e in self.errors), what=f"the refusal of {sentinel}")
        return any(action.lower() in e.lower() for e in self.errors)  # nats-py lowercases the message


async def login(server: EmbeddedServer, creds: Path, role: str) -> Login:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    password = read_credentials(creds)[ROLES[role].password_variable]
    nc = await nats.connect(
        server.url, user=role, password=password, inbox_prefix=ROLES[role].inbox_prefix, error_cb=on_error, allow_reconnect=False
    )
    return Login(nc, errors)


@pytest.fixture
async def admin(secured: EmbeddedServer, creds: Path) -> AsyncIterator[Client]:
    who = await login(secured, creds, "admin")
    await streams.apply(who.nc.jetstream())
    yield who.nc
    await who.nc.close()


async def messages(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.messages)


def test_nats_conf_carries_every_role_with_its_password_variable() -> None:
    conf = (ROOT / "nats.conf").read_text()
    assert conf == server_config()
    for role in ROLES.values():
        assert f"user: {role.name}, password: ${role.password_variable}" in conf
    assert "password: p" not in conf  # never a password itself


def test_auth_init_writes_private_passwords_once(tmp_path: Path) -> None:
    path = tmp_path / "a" / "nats-auth.env"
    assert init_credentials(path)
    first = read_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {r.password_variable for r in ROLES.values()}
    assert len(set(first.values())) == len(ROLES)  # every role its own
    assert not init_credentials(path)
    assert read_credentials(path) == first
    assert init_credentials(path, force=True) and read_credentials(path) != first
    path.write_text("SQT_NATS_PASSWORD_ADMIN=x\n")
    with pytest.raises(AuthError, match="SQT_NATS_PASSWORD_EXCHANGE"):
        read_credentials(path)


def test_client_takes_the_environment_user_first_then_the_file_by_role(creds: Path) -> None:
    env = {"SQT_NATS_CREDENTIALS": str(creds)}
    got = client_auth("executor", env)
    assert (got.user, got.password, got.inbox_prefix) == (
        "executor",
        read_credentials(creds)["SQT_NATS_PASSWORD_EXECUTOR"],
        "_INBOX_executor",
    )
    mine = client_auth("executor", {**env, "SQT_NATS_USER": "gateway", "SQT_NATS_PASSWORD": "given"})
    assert (mine.user, mine.password, mine.inbox_prefix) == ("gateway", "given", "_INBOX_gateway")
    assert client_auth("executor", {"SQT_NATS_CREDENTIALS": str(creds.parent / "none.env")}).user is None
    with pytest.raises(AuthError, match="unknown NATS role"):
        client_auth("nobody", env)


def test_auth_cli_init_refuses_to_overwrite(tmp_path: Path) -> None:
    env = {**os.environ, "SQT_NATS_CREDENTIALS": str(tmp_path / "c.env"), "SQT_CONFIG": str(ROOT / "configs" / "sqt.toml")}
    sqt = [sys.executable, "-m", "cli.main", "auth"]
    first = subprocess.run([*sqt, "init"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0 and "wrote a password for each of" in first.stdout
    again = subprocess.run([*sqt, "init"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    roles = subprocess.run([*sqt, "roles"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert "gateway: the web page's server" in roles.stdout and "ops.control.grid.>" in roles.stdout
    assert read_credentials(tmp_path / "c.env")["SQT_NATS_PASSWORD_GATEWAY"] not in roles.stdout + first.stdout


async def test_anonymous_and_wrong_password_are_refused(secured: EmbeddedServer) -> None:
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secured.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secured.url, user="executor", password="guess", allow_reconnect=False, max_reconnect_attempts=0)


async def test_the_gateway_publishes_controls_only(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    gw = await login(secured, creds, "gateway")
    try:
        await gw.nc.publish("ops.control.grid.all", b"{}")
        assert not await gw.refused("ops.control")
        await eventually(lambda: messages(admin, "OPS"), what="the control in OPS")
        await gw.nc.publish("cmd.sim.main.BTC-USDT.place", b"{}")
        assert await gw.refused('Publish to "cmd.sim.main.BTC-USDT.place"')
        with pytest.raises(Exception):  # noqa: B017 - refused: no answer comes
            await gw.nc.jetstream(timeout=1).delete_stream("MARKET")
        assert await gw.refused("$JS.API.STREAM.DELETE.MARKET")
        with pytest.raises(Exception):  # noqa: B017
            await (await gw.nc.jetstream(timeout=1).key_value("registry")).put("grid.x", b"{}")
        assert await gw.refused("$KV.registry.grid.x")
        assert await messages(admin, "COMMAND") == 0
        assert await messages(admin, "MARKET") == 0  # still there: not deleted
        assert await messages(admin, "KV_registry") == 0
    finally:
        await gw.nc.close()


async def test_a_strategy_commands_but_cannot_write_the_account(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    st = await login(secured, creds, "strategy")
    try:
        await st.nc.publish("cmd.sim.main.BTC-USDT.place", b"{}")
        await st.nc.publish("acct.sim.main.BTC-USDT.fill", b"{}")
        assert await st.refused('Publish to "acct.sim.main.BTC-USDT.fill"')
        assert not await st.refused("cmd.sim.main")
        await eventually(lambda: messages(admin, "COMMAND"), what="the command in COMMAND")
        assert await messages(admin, "ACCOUNT") == 0
    finally:
        await st.nc.close()


async def test_the_archive_publishes_nothing(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    ar = await login(secured, creds, "archive")
    attempts = ["md.sim.BTC-USDT.candle", "acct.sim.main.BTC-USDT.fill", "cmd.sim.main.BTC-USDT.place", "ops.archive.main.state"]
    attempts += ["dlq.md.x", "$KV.checkpoints.archive", "$KV.registry.grid.x", "ops.control.grid.all"]
    try:
        for subject in attempts:
            await ar.nc.publish(subject, b"{}")
            assert await ar.refused(f'Publish to "{subject}"'), subject
        for name in ("MARKET", "ACCOUNT", "COMMAND", "OPS", "DLQ", "KV_checkpoints", "KV_registry"):
            assert await messages(admin, name) == 0, name
        # and yet it reads: a consumer of its own on a stream
        js = ar.nc.jetstream()
        sub = await js.subscribe("md.>", stream="MARKET", ordered_consumer=True)
        await admin.jetstream().publish("md.sim.BTC-USDT.candle", b"x")
        assert (await sub.next_msg(timeout=5)).data == b"x"
    finally:
        await ar.nc.close()


async def test_no_role_reads_another_roles_replies(secured: EmbeddedServer, creds: Path) -> None:
    gw = await login(secured, creds, "gateway")
    try:
        await gw.nc.subscribe("_INBOX_executor.>")
        assert await gw.refused('Subscription to "_INBOX_executor.>"')
        await gw.nc.subscribe("_INBOX_gateway.>")
        gw.errors.clear()
        assert not await gw.refused("Subscription to")
    finally:
        await gw.nc.close()


async def test_the_reply_subject_trick_fails_against_a_component(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    """A request naming a stream's subject as its reply address would have the component, whose
    user may publish there, write into the stream: components answer inboxes only."""
    ex = await login(secured, creds, "executor")
    op = await login(secured, creds, "operator")
    gw = await login(secured, creds, "gateway")
    try:
        service = await register(ex.nc, "executor", "sim-main", "test", lambda: {"ok": True})
        await ex.nc.flush()  # its subscriptions are the server's before anyone asks
        answer = await op.nc.request("sqt.status.executor.sim-main", b"", timeout=5)  # a real inbox: answered
        assert b'"ok": true' in answer.data
        await op.nc.publish("sqt.status.executor.sim-main", b"", reply="acct.sim.main.BTC-USDT.fill")
        await gw.nc.publish("sqt.status.executor.sim-main", b"", reply="acct.sim.main.BTC-USDT.fill")
        assert await gw.refused('Publish to "sqt.status.executor.sim-main"')  # the gateway may not even ask
        # NATS micro's own verbs answer through the same guard
        info = await op.nc.request("$SRV.INFO.sqt-executor", b"", timeout=5)
        assert b"sqt-executor" in info.data
        for verb in ("$SRV.PING", "$SRV.INFO", "$SRV.STATS.sqt-executor"):
            await op.nc.publish(verb, b"", reply="acct.sim.main.BTC-USDT.fill")
        await op.nc.request("sqt.status.executor.sim-main", b"", timeout=5)  # the trick's requests were handled before this
        await op.nc.request("$SRV.PING.sqt-executor", b"", timeout=5)
        assert await messages(admin, "ACCOUNT") == 0
        await service.stop()
    finally:
        for who in (ex, op, gw):
            await who.nc.close()


@pytest.mark.xfail(strict=True, reason="one account cannot confine the JetStream API's answers (docs/adr/0026)")
async def test_the_reply_subject_trick_fails_against_the_jetstream_api(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    gw = await login(secured, creds, "gateway")
    try:
        await gw.nc.publish("$JS.API.INFO", b"", reply="acct.sim.main.BTC-USDT.fill")
        await gw.nc.flush()
        await asyncio.sleep(0.5)  # nothing to wait for when it works: a bounded look
        assert await messages(admin, "ACCOUNT") == 0
    finally:
        await gw.nc.close()


SUBJECTS = [
    "$JS.API.STREAM.CREATE.HIJACK",
    "$JS.API.CONSUMER.MSG.NEXT.COMMAND.executor-sim-main",
    "$JS.ACK.COMMAND.executor-sim-main.1.1.1.1.0",
    "$JS.API.CONSUMER.CREATE.COMMAND.executor-sim-main",
    "ops.control.risk.main",
    "venue.sim.api.markets",
    "venue.sim.api.step",
    "md.sim.BTC-USDT.candle",
    "acct.sim.main.BTC-USDT.fill",
    "cmd.sim.main.BTC-USDT.place",
    "cmd.sim.main.BTC-USDT.cancel_all",
    "ops.control.grid.all",
    "ops.risk.main.breaker",
    "ops.grid.btc.state",
    "dlq.md.sim.x",
    "venue.sim.api.create_order",
    "venue.sim.journal.place",
    "$KV.breakers.venue.sim",
    "$KV.registry.grid.btc",
    "$KV.registry.lease.archive-market",
    "$JS.API.STREAM.DELETE.MARKET",
    "$JS.API.STREAM.UPDATE.ACCOUNT",
    "$JS.API.CONSUMER.DELETE.MARKET.x",
]


async def test_the_server_enforces_exactly_what_may_publish_says(secured: EmbeddedServer, creds: Path) -> None:
    """bus/auth.py's own reading of the rights (which components consult before trying) agrees
    with the server's, role by role and subject by subject."""
    for role in [r.name for r in ROLES.values() if not r.everything]:  # the admin may do anything
        who = await login(secured, creds, role)
        try:
            for subject in SUBJECTS:
                who.errors.clear()
                await who.nc.publish(subject, b"")
                assert await who.refused(f'"{subject}"') is not may_publish(role, subject), (role, subject, who.errors)
        finally:
            await who.nc.close()


def test_rendering_names_every_role_once() -> None:
    block = authorization_block()
    for role in ROLES.values():
        assert block.count(f"user: {role.name},") == 1


async def test_the_gateway_refuses_registry_changes_under_users(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    """The page's registry frame needs a bucket write the gateway's user does not have: it is
    refused at once with the way that works, and nothing is written."""
    from bus.connection import connect
    from bus.settings import BusSettings
    from gateway.auth import Identity
    from gateway.control import apply_registry
    from gateway.inbound import RegistryOp

    gw = await connect(login_url_for(secured, creds, "gateway"), name="pytest-gateway", attempts=3, role="gateway")
    try:
        result = await apply_registry(
            gw, BusSettings(nats_url=secured.url), Identity("ops", "operator"), RegistryOp(op="pause", instance="btc")
        )
        assert not result.ok and "sqt grid" in result.message
        assert await messages(admin, "KV_registry") == 0
    finally:
        await gw.close()


def login_url_for(server: EmbeddedServer, creds: Path, role: str) -> str:
    from testkit.bus import login_url

    return login_url(server.url, creds, role)


# What each role's components do (grep the code for the subject builders): a right taken away
# by mistake breaks a path the end-to-end runs may not take.
NEEDS = {
    "exchange": ["md.sim.BTC-USDT.ticker", "acct.sim.main.BTC-USDT.fill", "venue.sim.journal.place", "$KV.checkpoints.venue-sim"],
    "executor": [
        "acct.sim.main.BTC-USDT.order",
        "venue.sim.api.create_order",
        "venue.sim.api.cancel_all",
        "ops.executor.sim-main.heartbeat",
    ],
    "strategy": [
        "cmd.sim.main.BTC-USDT.place",
        "cmd.sim.main.BTC-USDT.cancel",
        "ops.grid.btc.state",
        "ops.control.grid.btc",
        "ops.registry.grid.btc",
        "$KV.registry.instance.grid.btc",
        "venue.sim.api.open_orders",
        "ops.funding-monitor.main.clock",
    ],
    "risk": ["cmd.sim.main.BTC-USDT.cancel_all", "ops.risk.main.breaker", "$KV.breakers.venue.sim", "venue.sim.api.markets"],
    "reconciler": ["ops.reconciler.sim-main.finding", "venue.sim.api.positions", "venue.sim.api.balance"],
    "alerts": ["ops.alerts.main.alert", "$KV.alerts.sent.x", "$JS.API.STREAM.CREATE.KV_alerts", "$SRV.PING"],
    "archive": ["$KV.registry.lease.archive-market", "$JS.API.CONSUMER.CREATE.MARKET", "$JS.FC.MARKET.x"],
    "gateway": ["ops.control.grid.btc", "$JS.API.CONSUMER.CREATE.OPS", "$JS.API.DIRECT.GET.KV_registry.$KV.registry.x"],
    "operator": ["ops.control.risk.main", "cmd.sim.main.BTC-USDT.cancel_all", "$KV.breakers.venue.sim", "$SRV.INFO"],
}
MUST_NOT = {
    "strategy": [
        "acct.sim.main.BTC-USDT.fill",
        "$JS.API.STREAM.CREATE.HIJACK",
        "$JS.API.STREAM.UPDATE.IN_GRID_BTC",
        "venue.sim.api.create_order",
    ],
    "risk": ["cmd.sim.main.BTC-USDT.place", "$JS.API.STREAM.CREATE.HIJACK"],
    "alerts": ["cmd.sim.main.BTC-USDT.place", "$JS.API.STREAM.CREATE.HIJACK"],
    "gateway": [
        "ops.control.risk.main",
        "$JS.API.CONSUMER.MSG.NEXT.COMMAND.executor-sim-main",
        "$JS.ACK.COMMAND.x",
        "$JS.API.CONSUMER.CREATE.COMMAND.executor-sim-main",
        "$KV.registry.instance.grid.btc",
    ],
    "archive": ["$KV.registry.lease.executor-sim-main", "$JS.ACK.MARKET.x", "ops.control.grid.btc"],
    "reconciler": ["venue.sim.api.create_order", "acct.sim.main.BTC-USDT.fill"],
    "operator": ["md.sim.BTC-USDT.ticker", "acct.sim.main.BTC-USDT.fill", "$JS.API.STREAM.CREATE.HIJACK", "$JS.API.STREAM.DELETE.ACCOUNT"],
}


@pytest.mark.parametrize("role", sorted(NEEDS))
def test_each_role_holds_what_its_components_publish_and_no_more(role: str) -> None:
    for subject in NEEDS[role]:
        assert may_publish(role, subject), (role, subject)
    for subject in MUST_NOT.get(role, []):
        assert not may_publish(role, subject), (role, subject)


async def test_a_bucket_refuses_a_rollup_that_would_wipe_it(secured: EmbeddedServer, creds: Path, admin: Client) -> None:
    """Whoever may write one key of a bucket could otherwise wipe it whole with `Nats-Rollup`."""
    kv = await admin.jetstream().key_value("registry")
    await kv.put("instance.grid.btc", b"{}")
    ar = await login(secured, creds, "archive")
    try:
        with pytest.raises(Exception, match="(?i)rollup"):
            await ar.nc.jetstream().publish("$KV.registry.lease.archive-market", b"", headers={"Nats-Rollup": "all"})
        assert (await kv.get("instance.grid.btc")).value == b"{}"
    finally:
        await ar.nc.close()


async def test_a_login_in_the_url_is_the_one_used(secured: EmbeddedServer, creds: Path) -> None:
    from bus.connection import connect
    from testkit.bus import login_url

    nc = await connect(login_url(secured.url, creds, "admin"), name="pytest", attempts=3, role="gateway")
    try:
        assert nc.logged_in_as == "admin"  # type: ignore[attr-defined]
        await nc.jetstream().add_stream(name="MINE", subjects=["mine.>"])  # the admin's right, not the gateway's
    finally:
        await nc.close()


async def test_a_bucket_another_process_just_created_is_not_an_error(nats_server: EmbeddedServer) -> None:
    """Every component applies the declarations at start on a server without users: a bucket
    another process created (and refused rollups on) between our look and our create is there,
    not "a different configuration" that stops the component."""
    from nats.js.errors import NotFoundError

    from bus.connection import connect

    first, second = [await connect(nats_server.url, name=f"pytest-{i}", attempts=3) for i in range(2)]
    try:
        assert (await streams.apply_bucket(first.jetstream(), streams.BREAKERS, nodes=1)).kind == "created"
        js = second.jetstream()
        real, looked = js.stream_info, list[str]()

        async def not_there_yet(name: str, *args: Any, **kwargs: Any) -> Any:
            if not looked:  # our look came before the other's create
                looked.append(name)
                raise NotFoundError
            return await real(name, *args, **kwargs)

        js.stream_info = not_there_yet  # type: ignore[method-assign]
        assert (await streams.apply_bucket(js, streams.BREAKERS, nodes=1)).kind == "unchanged"
        assert not (await first.jetstream().stream_info("KV_breakers")).config.allow_rollup_hdrs
    finally:
        await first.close()
        await second.close()
