"""WebSocket routes: the OnMemOS shell protocol, the interactive terminal, the VNC viewer and
live logs.

Everything is checked before the upgrade (credential, ownership, Origin): a refused caller
gets a plain HTTP error and nothing is relayed. Blocking Store calls run in the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import WSMsgType, web

from tether import bootstrap
from tether.core.models import Principal, Session, utcnow
from tether.errors import TetherError
from tether.provision.runtime_http import IdToken
from tether.service.tickets import is_ticket
from tether.service.tokens import looks_like_jwt
from tether.surfaces.http import status_for

T = TypeVar("T")
MAX_FRAME = 1 << 20  # bytes; a larger frame closes the connection
WS_OPTIONS: dict[str, Any] = {
    "heartbeat": 30,  # ping/pong: a dead peer frees both legs
    "compress": False,  # no permessage-deflate: the streams are binary or tiny
    "max_msg_size": MAX_FRAME,
}


# Store calls and shell commands (which last as long as the command) run here, not on the
# loop's small default pool, so long commands cannot starve new connections' checks.
_threads = ThreadPoolExecutor(64, thread_name_prefix="relay")


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_threads, fn, *args)


class Refused(Exception):
    def __init__(self, error: TetherError) -> None:
        self.response = web.json_response(
            {"detail": error.message, "code": error.details.get("code")},
            status=status_for(error),
        )


def _principal(request: web.Request, session_id: str) -> Principal:
    services = bootstrap.services()
    for name in ("ticket", "token", "api_key"):
        value = request.query.get(name)
        if not value:
            continue
        if is_ticket(value):
            return services.tickets.redeem(value, session_id)
        if looks_like_jwt(value):
            return services.tokens.verify(value)
        return services.auth.principal_for_key(value)
    return services.auth.authenticate(
        request.headers.get("Authorization"), request.headers.get("X-API-Key")
    )


def _authorize(request: web.Request, session_id: str) -> tuple[Principal, Session]:
    principal = _principal(request, session_id)
    return principal, bootstrap.services().sessions.usable(principal, session_id)


def same_origin(request: web.Request) -> bool:
    """Browsers send Origin; a page from another site must not drive a user's session.
    (Programs send no Origin, and are judged by their credential alone.)"""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def session_id_of(request: web.Request) -> str:
    if "session_id" in request.match_info:
        return request.match_info["session_id"]
    return request.match_info["path_info"].split("/")[3]  # api/v1/sessions/<id>/logs


async def authorize(request: web.Request) -> tuple[Principal, Session]:
    if not same_origin(request):
        raise web.HTTPForbidden(
            text=json.dumps({"detail": "Cross-origin WebSocket refused"}),
            content_type="application/json",
        )
    try:
        return await blocking(_authorize, request, session_id_of(request))
    except TetherError as exc:
        raise Refused(exc) from None


def guarded(
    handler: Callable[[web.Request], Any],
) -> Callable[[web.Request], Any]:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except Refused as refused:
            return refused.response

    return run


@guarded
async def shell(request: web.Request) -> web.WebSocketResponse:
    """OnMemOS: `{"type": "command", "command": ...}` in, `{"type": "command_result", ...}` out."""
    principal, session = await authorize(request)
    ws = web.WebSocketResponse(**WS_OPTIONS)
    await ws.prepare(request)
    watcher = asyncio.ensure_future(close_when_session_ends(ws, session.id))
    try:
        await _serve_commands(ws, principal, session.id)
    finally:
        watcher.cancel()
    return ws


async def _serve_commands(ws: web.WebSocketResponse, principal: Principal, session_id: str) -> None:
    sessions = bootstrap.services().sessions
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            continue
        try:
            data = json.loads(msg.data)
            command, timeout = data["command"], float(data.get("timeout", 120))
            if data.get("type") != "command" or not isinstance(command, str) or not command:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            await ws.send_json(
                {"type": "error", "detail": 'expected {"type": "command", "command": "..."}'}
            )
            continue
        try:
            result = await blocking(sessions.execute, principal, session_id, command, timeout)
        except TetherError as exc:
            await ws.send_json({"type": "error", "detail": exc.message})
            continue
        await ws.send_json({"type": "command_result", "command": command, **result.model_dump()})


WATCH_INTERVAL = 2.0  # seconds between checks that a relayed session still runs


def _still_running(session_id: str) -> bool:
    """Whether the session still runs; if so, an open connection counts as activity (someone
    has its terminal or desktop open), so idle_timeout does not hibernate it under them."""
    sessions = bootstrap.services().sessions
    session = sessions.repo.find(session_id)
    if session is None or session.state.value != "running" or session.expired(utcnow()):
        return False
    sessions.touch(session)
    return True


async def close_when_session_ends(ws: web.WebSocketResponse, session_id: str) -> None:
    """A session that ends (terminated, hibernated, expired) closes its relays."""
    while not ws.closed:
        await asyncio.sleep(WATCH_INTERVAL)
        if not await blocking(_still_running, session_id):
            await ws.close(code=4001, message=b"session ended")
            return


@functools.cache
def _id_tokens() -> IdToken:
    from tether.provision.runtime_http import GoogleIdTokens

    return GoogleIdTokens()


def runtime_endpoint(session: Session, path: str) -> tuple[aiohttp.BaseConnector | None, str]:
    """Where the session's runtime answers: a Unix socket locally, a URL in the cloud."""
    url = session.url or ""
    if url.startswith("http+unix://"):
        return aiohttp.UnixConnector(
            path=unquote(url[len("http+unix://") :])
        ), f"http://runtime{path}"
    return None, url.rstrip("/") + path


async def relay_to_runtime(
    request: web.Request,
    path: str,
    query: dict[str, str],
    protocols: tuple[str, ...] = (),
    desktop: bool = False,
) -> web.StreamResponse:
    """Authorize, open the runtime's WebSocket at `path`, then splice the two."""
    _, session = await authorize(request)
    if desktop and not session.vnc:
        return web.json_response({"detail": "This session has no desktop"}, status=404)
    connector, url = runtime_endpoint(session, path)
    headers = {}
    if url.startswith("https://"):  # a Cloud Run workspace: private, so it wants an ID token
        try:
            token = await blocking(_id_tokens(), (session.url or "").rstrip("/"))
        except TetherError as exc:
            return web.json_response({"detail": exc.message}, status=502)
        headers["Authorization"] = f"Bearer {token}"
    client = aiohttp.ClientSession(connector=connector, headers=headers)
    try:
        upstream = await client.ws_connect(url, params=query, protocols=protocols, **WS_OPTIONS)
    except aiohttp.WSServerHandshakeError as exc:
        await client.close()
        detail = (
            "This session has no desktop" if exc.status == 404 else f"Runtime said {exc.status}"
        )
        return web.json_response({"detail": detail}, status=404 if exc.status == 404 else 502)
    except (aiohttp.ClientError, OSError) as exc:
        await client.close()
        return web.json_response({"detail": f"Workspace runtime unreachable: {exc}"}, status=502)
    ws = web.WebSocketResponse(protocols=protocols, **WS_OPTIONS)
    watcher = asyncio.ensure_future(close_when_session_ends(ws, session.id))
    try:
        await ws.prepare(request)
        await splice(ws, upstream)
    finally:
        watcher.cancel()
        await upstream.close()
        await client.close()
    return ws


@guarded
async def terminal(request: web.Request) -> web.StreamResponse:
    """An interactive PTY: frames pass through unchanged in both directions."""
    query = {k: request.query[k] for k in ("cols", "rows") if k in request.query}
    return await relay_to_runtime(request, "/pty", query)


VIEWER = Path(__file__).with_name("viewer.html")
NOVNC = Path(__file__).with_name("static") / "novnc"


@guarded
async def vnc_viewer(request: web.Request) -> web.StreamResponse:
    """A WebSocket upgrade carries raw RFB (noVNC's `binary` subprotocol); a plain GET is the
    viewer page, which holds no secret and opens that WebSocket with the URL's credential."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.FileResponse(VIEWER, headers={"Cache-Control": "no-store"})
    return await relay_to_runtime(request, "/vnc", {}, protocols=("binary",), desktop=True)


async def splice(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Both directions at once; each send waits for the socket to drain, so a slow reader
    slows its writer instead of growing a buffer. Either side closing closes both."""

    async def pipe(src: Any, dst: Any) -> None:
        async for msg in src:
            if msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            else:
                break

    tasks = [asyncio.ensure_future(pipe(client, upstream)),
             asyncio.ensure_future(pipe(upstream, client))]  # fmt: skip
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await client.close()
    await upstream.close()


def follow_logs(fallback: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """`GET /api/v1/sessions/{id}/logs?follow=true` upgrades to a stream of new log lines;
    anything else on that path is the StreamSpace function's (`fallback`)."""

    @guarded
    async def handler(request: web.Request) -> web.StreamResponse:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade or request.query.get("follow", "").lower() not in ("true", "1"):
            response: web.StreamResponse = await fallback(request)
            return response
        query = {"tail": request.query.get("tail", "100")}
        return await relay_to_runtime(request, "/logs/follow", query)

    return handler


def add_routes(app: web.Application, fallback: Callable[[web.Request], Any]) -> None:
    for prefix in ("/v1/cloudrun/workspaces", "/v1/sessions"):
        app.router.add_get(prefix + "/{session_id}/shell", shell)
    app.router.add_get("/v1/sessions/{session_id}/terminal", terminal)
    app.router.add_get("/vnc-viewer/{session_id}", vnc_viewer)
    # `path_info` spans the whole path, as the WSGI fallback expects of its routes.
    app.router.add_get("/{path_info:api/v1/sessions/[^/]+/logs}", follow_logs(fallback))
    if NOVNC.is_dir():  # vendored by `make install` (npm), never fetched from a CDN
        app.router.add_static("/novnc/", NOVNC)
