"""The gateway's aiohttp app: the page, the WebSocket protocol, REST, health, status, metrics.

Built by `make_app` around a NATS connection; the feed runs as the app's background task
(`cleanup_ctx`), so an app under aiohttp's test client is the whole gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web
from nats.aio.client import Client as Nats
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bus.secrets import redact
from bus.settings import BusSettings
from gateway import frames, rest
from gateway.auth import Auth, Identity
from gateway.config import GatewayConfig
from gateway.control import apply_control, apply_registry
from gateway.feed import Feed
from gateway.frames import Frame, Market, encode
from gateway.hub import Client, Hub
from gateway.inbound import ClientFrame, Control, PlaybackControl, RateLimit, RegistryOp, Resume, Subscribe, parse
from gateway.metrics import GatewayMetrics
from gateway.playback import BadWindow, Playback, Recorded, from_bus, window
from gateway.view import STREAMS, View

WEB = Path(__file__).resolve().parent.parent / "web"
READY_WAIT = 10.0  # seconds a browser that connects while the gateway starts waits for its read-back

CONFIG = web.AppKey("config", GatewayConfig)
VIEW = web.AppKey("view", View)
HUB = web.AppKey("hub", Hub)
FEED = web.AppKey("feed", Feed)
NC = web.AppKey("nc", Nats)
STARTED = web.AppKey("started", float)
AUTH = web.AppKey("auth", Auth)
SETTINGS = web.AppKey("settings", BusSettings)  # the venues a registry add checks its market against
RECORD = web.AppKey("record", list[Recorded])  # `sqt run gateway --from-file`: playback plays this
WHO = web.RequestKey("identity", Identity)  # set by the auth middleware
OPEN = ("/", "/health")  # and /static/: the page itself holds nothing; its data needs a token


def make_app(
    nc: Nats, config: GatewayConfig, auth: Auth | None = None, record: list[Recorded] | None = None, settings: BusSettings | None = None
) -> web.Application:
    app = web.Application(middlewares=[_authenticate])
    app[AUTH] = auth or Auth("off")
    app[SETTINGS] = settings or BusSettings(nats_url="")
    if record is not None:
        app[RECORD] = record
    view = View(candles=config.candle_minutes, resume_frames=config.resume_frames, fills=config.fills_kept)
    hub = Hub(GatewayMetrics())
    app[CONFIG], app[VIEW], app[HUB], app[NC] = config, view, hub, nc
    app[FEED] = Feed(nc, config, view, hub)
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_feed)
    app.router.add_get("/", page)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    rest.add_routes(app, view)
    if WEB.is_dir():
        app.router.add_static("/static/", WEB, follow_symlinks=False)
    return app


async def _feed(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[FEED].run(), name="gateway-feed")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for client in list(app[HUB].clients):
        app[HUB].close(client, 1001, "gateway stopping")


# ----------------------------------------------------------------------------- auth


@web.middleware
async def _authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
    auth = request.app[AUTH]
    if request.path in OPEN or request.path.startswith("/static/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else request.query.get("token")
    who = auth.identify(token)
    if who is None:
        return web.json_response({"error": "a valid token is required (Authorization: Bearer, or ?token= for /ws)"}, status=401)
    request[WHO] = who
    return await handler(request)


def _origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: nothing to protect a page from
    if allowed:
        return origin in allowed
    return origin in (f"http://{request.host}", f"https://{request.host}")


# ----------------------------------------------------------------------------- page, health


async def page(_request: web.Request) -> web.StreamResponse:
    index = WEB / "index.html"
    if not index.is_file():
        return web.Response(status=404, text="the page is not installed (web/index.html)")
    return web.FileResponse(index, headers={"Cache-Control": "no-cache"})


async def health(request: web.Request) -> web.Response:
    app = request.app
    ok = app[NC].is_connected and app[FEED].ready
    return web.json_response({"ok": ok, "nats": app[NC].is_connected, "following": app[FEED].ready}, status=200 if ok else 503)


def state_of(app: web.Application) -> dict[str, Any]:
    """What the gateway knows of itself without asking NATS (also its micro service's status)."""
    view, hub, feed, nc = app[VIEW], app[HUB], app[FEED], app[NC]
    return {
        "clients": len(hub.clients),
        "subscriptions": {f"{m.venue} {m.symbol}": len(c) for m, c in sorted(hub.by_market.items()) if c},
        "nats": {"connected": nc.is_connected, "url": redact(nc.connected_url.geturl()) if nc.connected_url else None},
        "uptime_s": round(time.monotonic() - app[STARTED], 1),
        "streams": {name: {"position": view.positions[name], "ready": feed.state.ready[name]} for name in STREAMS},
        "markets": len(view.markets),
        "skipped_events": feed.state.skipped,
        "read_restarts": feed.state.restarts,
    }


async def status(request: web.Request) -> web.Response:
    """state_of, plus each stream's last sequence and the lag behind it."""
    body = state_of(request.app)
    for name, stream in body["streams"].items():
        last = None
        with contextlib.suppress(Exception):
            last = int((await request.app[NC].jetstream().stream_info(name)).state.last_seq)
        stream.update(last=last, lag=None if last is None else max(0, last - stream["position"]))
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[HUB].metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


# ----------------------------------------------------------------------------- WebSocket


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    config, view, hub, feed = app[CONFIG], app[VIEW], app[HUB], app[FEED]
    if not _origin_allowed(request, config.allowed_origins):
        raise web.HTTPForbidden(text="origin not allowed")
    who: Identity = request[WHO]
    if "from" in request.query:
        return await _playback(request, who)
    ws = _socket(config)
    await ws.prepare(request)
    client = Client(ws, config.client_queue, hub.metrics)
    hub.add(client)
    pump = asyncio.create_task(client.pump(), name="gateway-client")
    limit = RateLimit(config.frames_per_second, config.frame_burst)
    controls: set[asyncio.Task[None]] = set()
    try:
        await _ready(feed)
        first = view.default_market()
        hello = frames.Hello(
            markets=sorted(view.markets), market=first, server_time=int(time.time() * 1000), positions=dict(view.positions), role=who.role
        )
        client.offer("hello", encode(Frame(type="hello", data=hello)))
        if first is not None:
            _subscribe(client, hub, view, first)
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                _answer(client, hub, view, config, limit, msg.data, who, app[NC], controls, app[SETTINGS])
            elif msg.type == WSMsgType.ERROR:
                break
    except asyncio.TimeoutError:
        await ws.close(code=1001, message=b"idle: no frame from the client within the idle timeout")
    finally:
        hub.remove(client)
        for task in controls:
            task.cancel()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
    return ws


async def _playback(request: web.Request, who: Identity) -> web.WebSocketResponse:
    """A past window played to this browser alone; it gets no live frames meanwhile."""
    app = request.app
    config = app[CONFIG]
    try:
        start, end, speed, wanted = window(dict(request.query))
    except BadWindow as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    lookback = dt.timedelta(minutes=config.account_lookback_minutes)
    records = app[RECORD] if RECORD in app else await from_bus(app[NC], start, end, lookback)
    session = Playback(records, int(start.timestamp() * 1e9), int(end.timestamp() * 1e9), speed)
    market = session.prepare(wanted)
    ws = _socket(config)
    await ws.prepare(request)
    client = Client(ws, config.client_queue, app[HUB].metrics)
    pump = asyncio.create_task(client.pump(), name="gateway-playback-client")
    hello = frames.Hello(
        markets=session.markets, market=market, server_time=int(time.time() * 1000), positions={}, role="viewer", mode="playback"
    )
    client.offer("hello", encode(Frame(type="hello", data=hello)))
    player = asyncio.create_task(session.play(client), name="gateway-playback")
    limit = RateLimit(config.frames_per_second, config.frame_burst)
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            match _checked(client, app[HUB], config, limit, msg.data):
                case None:
                    continue
                case PlaybackControl(action="pause"):
                    session.pause()
                case PlaybackControl(action="resume"):
                    session.resume()
                case PlaybackControl(action="step"):
                    session.step()
                case Resume() | Subscribe() | Control():
                    _refuse(client, app[HUB], "playback", "a playback takes only playback and ping frames")
                    continue
                case _:
                    client.offer("pong", _pong())
                    continue
            client.offer("playback", encode(session.state()))
    except asyncio.TimeoutError:
        await ws.close(code=1001, message=b"idle")
    finally:
        player.cancel()
        pump.cancel()
        for task in (player, pump):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return ws


async def _ready(feed: Feed) -> None:
    deadline = time.monotonic() + READY_WAIT
    while not feed.ready and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _answer(
    client: Client,
    hub: Hub,
    view: View,
    config: GatewayConfig,
    limit: RateLimit,
    data: str | bytes,
    who: Identity,
    nc: Nats,
    controls: set[asyncio.Task[None]],
    settings: BusSettings,
) -> None:
    frame = _checked(client, hub, config, limit, data)
    match frame:
        case None:
            return
        case Subscribe(venue=venue, symbol=symbol):
            market = Market(venue, symbol)
            if market not in view.markets:
                return _refuse(client, hub, "unknown_market", f"no data for {venue} {symbol}")
            _subscribe(client, hub, view, market)
        case Resume(venue=venue, symbol=symbol, after=after):
            market = Market(venue, symbol)
            if market not in view.markets:
                return _refuse(client, hub, "unknown_market", f"no data for {venue} {symbol}")
            missed = view.since(market, after)
            hub.metrics.resumes.labels("restarted" if missed is None else "exact").inc()
            if missed is None:
                _subscribe(client, hub, view, market)  # too old: start over, history first
            else:
                hub.watch(client, market)
                client.restart()
                for kind, text in missed:
                    client.offer(kind, text)
        case Control():
            if who.role != "operator":
                return _refuse(client, hub, "forbidden", f"{who.name} is a {who.role}: controls need an operator's token")
            task = asyncio.create_task(_control(client, nc, view, who, frame, config.control_wait))
            controls.add(task)
            task.add_done_callback(controls.discard)
        case RegistryOp():
            if who.role != "operator":
                return _refuse(client, hub, "forbidden", f"{who.name} is a {who.role}: the registry needs an operator's token")
            task = asyncio.create_task(_registry(client, nc, settings, who, frame))
            controls.add(task)
            task.add_done_callback(controls.discard)
        case PlaybackControl():
            return _refuse(client, hub, "bad_frame", "not a playback: open /ws?from=...&to=... to play a window")
        case _:  # ping
            client.offer("pong", _pong())


async def _control(client: Client, nc: Nats, view: View, who: Identity, ctl: Control, wait: float) -> None:
    try:
        result = await apply_control(nc, view, who, ctl, wait)
    except Exception as exc:  # noqa: BLE001 - NATS unreachable: say so, keep the connection
        result = frames.ControlResult(
            action=ctl.action, venue=ctl.venue, symbol=ctl.symbol, ok=False, message=f"not stored: {exc or type(exc).__name__}"
        )
    client.offer("control_result", encode(Frame(type="control_result", data=result)))


async def _registry(client: Client, nc: Nats, settings: BusSettings, who: Identity, op: RegistryOp) -> None:
    try:
        result = await apply_registry(nc, settings, who, op)
    except Exception as exc:  # noqa: BLE001 - NATS unreachable: say so, keep the connection
        result = frames.RegistryResult(op=op.op, instance=op.instance, ok=False, message=f"not written: {exc or type(exc).__name__}")
    client.offer("registry_result", encode(Frame(type="registry_result", data=result)))


def _checked(client: Client, hub: Hub, config: GatewayConfig, limit: RateLimit, data: str | bytes) -> ClientFrame | None:
    """The client's frame, or None once it has been answered with why not (size, rate, shape)."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > config.max_frame_bytes:
        _refuse(client, hub, "too_large", f"a client frame may be at most {config.max_frame_bytes} bytes (got {size})")
        return None
    if not limit.take(time.monotonic()):
        _refuse(client, hub, "rate_limited", f"at most {config.frames_per_second:g} frames a second")
        return None
    try:
        return parse(data)
    except (msgspec.DecodeError, ValueError) as exc:
        _refuse(client, hub, "bad_frame", str(exc))
        return None


def _socket(config: GatewayConfig) -> web.WebSocketResponse:
    # No per-client compression: it doubled p99 at 1,000 clients and cost 170 KiB each. aiohttp
    # closes on frames beyond max_msg_size; below that we answer an `error` and go on.
    return web.WebSocketResponse(
        compress=False, heartbeat=20.0, max_msg_size=max(64 * 1024, config.max_frame_bytes * 4), receive_timeout=config.idle_timeout
    )


def _pong() -> str:
    return encode(Frame(type="pong", data=frames.Pong(ts=int(time.time() * 1000))))


def _subscribe(client: Client, hub: Hub, view: View, market: Market) -> None:
    hub.watch(client, market)
    client.restart()
    for frame in view.first_screen(market):
        client.offer(frame.type, encode(frame))


def _refuse(client: Client, hub: Hub, code: str, message: str) -> None:
    hub.metrics.refused.labels(code).inc()
    client.offer("error", encode(frames.error(code, message)))
