"""Relayed streams: a session's terminal, desktop (VNC) and live logs, each a WebSocket between
the client and the session's runtime.

Both handshakes are a library's: aiohttp answers the client's upgrade, the `websockets` client
opens the runtime's. Everything is checked before the upgrade is answered (the handshake's
validity, Origin, credential, ownership, that the runtime answers): a refused caller gets a
plain HTTP error and nothing is relayed. Then messages pass as they are, text as text and
binary as binary, each direction awaiting the other side's writes, so a slow reader slows the
runtime instead of growing memory. Each leg keeps itself alive with its own pings. A session
that ends closes its streams: its runtime closes them with 4001, which the relay passes on, and
a stream whose runtime has not done so within `CLOSE_GRACE` is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

import websockets
from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection

from tether.core.models import Principal, Session
from tether.errors import TetherError
from tether.provision.uds import connect_unix
from tether.relay import access
from tether.runtime import auth
from tether.runtime.websockets import UNIX_SEND_BUFFER
from tether.surfaces.http import status_for

T = TypeVar("T")
MAX_FRAME = 1 << 20  # bytes of one client message; a larger one closes the connection
WS_OPTIONS: dict[str, Any] = {
    "heartbeat": 30,  # ping/pong: a dead client frees both legs
    "compress": False,  # no permessage-deflate: the streams are binary or tiny
    "max_msg_size": MAX_FRAME,
}
CLOSE_GRACE = 5.0  # seconds an ended session's runtime has to close its streams itself
FROM_RUNTIME_MAX = 16 << 20  # bytes of one message from a runtime (a desktop's frame update)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Store calls and shell commands (which last as long as the command) run here, not on the
# loop's small default pool, so long commands cannot starve new connections' checks.
_threads = ThreadPoolExecutor(64, thread_name_prefix="relay")


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_threads, fn, *args)


def refusal(status: int, detail: str, code: str | None = None) -> web.Response:
    """A plain HTTP answer to a WebSocket upgrade that is refused."""
    return web.json_response({"detail": detail, "code": code}, status=status)


def refused(error: TetherError) -> web.Response:
    return refusal(status_for(error), error.message, error.details.get("code"))


@dataclass(frozen=True)
class Route:
    path: str  # aiohttp's pattern; the session's id is {session_id}
    runtime_path: str
    query: dict[str, str | None] = field(default_factory=dict)  # passed on; None: if given
    protocols: tuple[str, ...] = ()  # subprotocols offered to the runtime and accepted
    desktop: bool = False  # the session must have one
    follow_only: bool = False  # only with `?follow=true`: the plain request is a function's

    def wanted(self, request: web.Request) -> bool:
        """Whether `request` is this route's upgrade (else the path's plain handler serves it)."""
        if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
            return False
        follow = request.query.get("follow", "").lower() in ("true", "1")
        return follow or not self.follow_only


ROUTES = (
    Route("/v1/sessions/{session_id}/terminal", "/pty", {"cols": None, "rows": None}),
    Route("/vnc-viewer/{session_id}", "/vnc", protocols=("binary",), desktop=True),
    Route("/api/v1/sessions/{session_id}/logs", "/logs/follow", {"tail": "100"},
          follow_only=True),
)  # fmt: skip


def handler(route: Route, otherwise: Handler) -> Handler:
    """The route's path: its WebSocket relayed, any other request to `otherwise`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.wanted(request):
            return await serve(request, route)
        return await otherwise(request)

    return handle


async def authorize(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Principal, Session] | web.Response:
    """The caller and its running session, or the answer that refuses the upgrade to `ws`."""
    if not ws.can_prepare(request).ok:
        return refusal(400, "A WebSocket upgrade needs Sec-WebSocket-Key and version 13")
    if not access.same_origin(request.headers.get("Origin"), request.host):
        return refusal(403, "Cross-origin WebSocket refused")
    try:
        return await blocking(
            access.authorize,
            request.match_info["session_id"],
            request.query,
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
        )
    except TetherError as exc:
        return refused(exc)


async def serve(request: web.Request, route: Route) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=route.protocols, **WS_OPTIONS)
    allowed = await authorize(request, ws)
    if isinstance(allowed, web.Response):
        return allowed
    _, session = allowed
    if route.desktop and not session.vnc:
        return refusal(404, "This session has no desktop")
    query = {k: request.query.get(k, default) for k, default in route.query.items()}
    path = route.runtime_path + "?" + urlencode({k: v for k, v in query.items() if v is not None})
    try:
        runtime = await _open_runtime(session, path.rstrip("?"), route.protocols)
    except _Refused as refused:
        return refusal(refused.status, refused.detail)
    try:
        await ws.prepare(request)
        await _relay(ws, runtime, session.id)
    finally:
        await runtime.close()
    return ws


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


async def _open_runtime(
    session: Session, path: str, protocols: tuple[str, ...]
) -> ClientConnection:
    """The runtime's WebSocket at `path`, handshake done."""
    url = session.url or ""
    headers: dict[str, str] = {}
    options: dict[str, Any] = {}
    try:
        if url.startswith("http+unix://"):  # local: the runtime's Unix socket
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
            try:
                # A path a workspace may write: connected without following its links.
                await blocking(connect_unix, sock, unquote(url[len("http+unix://") :]))
            except OSError:
                sock.close()
                raise
            uri = "ws://runtime" + path
            options["sock"] = sock
            headers[auth.HEADER] = await blocking(access.runtime_token, session.id)
        else:  # a Cloud Run or GKE workspace
            parts = urlsplit(url)
            scheme = "wss" if parts.scheme == "https" else "ws"
            uri = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"
            if scheme == "wss":  # a private Cloud Run service: it wants an ID token
                options["ssl"] = ssl.create_default_context()
                token = await blocking(access.id_tokens(), url.rstrip("/"))
                if token:
                    headers["Authorization"] = f"Bearer {token}"
        return await websockets.connect(
            uri,
            additional_headers=headers,
            subprotocols=list(protocols) or None,  # type: ignore[arg-type]
            compression=None,
            max_size=FROM_RUNTIME_MAX,
            ping_interval=None,  # the runtime pings; this side answers
            open_timeout=10,
            user_agent_header=None,
            **options,
        )
    except TetherError as exc:  # no ID token to call the workspace with
        raise _Refused(502, exc.message) from None
    except websockets.InvalidStatus as exc:
        if exc.response.status_code == 404:
            raise _Refused(404, "This session has no desktop") from None
        raise _Refused(502, f"The workspace runtime answered {exc.response.status_code}") from None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        raise _Refused(502, f"Workspace runtime unreachable: {exc}") from None


async def _relay(ws: web.WebSocketResponse, runtime: ClientConnection, session_id: str) -> None:
    """Until either side closes (its close code passed to the other) or the session ends."""

    async def down() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in runtime:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message)
        code = runtime.close_code if runtime.close_code not in (None, 1005, 1006) else 1011
        await ws.close(code=code, message=(runtime.close_reason or "").encode())

    async def up() -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                try:
                    await runtime.send(msg.data)
                except websockets.ConnectionClosed:
                    return
        code = ws.close_code if ws.close_code not in (None, 1005, 1006) else 1000
        await runtime.close(code=code)

    tasks = [asyncio.ensure_future(t) for t in (down(), up(), _watch(session_id))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # The other direction ends as its peer answers the close; the session's end is cut.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(tasks[0]), CLOSE_GRACE)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not ws.closed:
            await ws.close(code=1011)


async def _watch(session_id: str) -> None:
    """Returns once the session has ended (terminated, hibernated, expired)."""
    while True:
        await asyncio.sleep(access.WATCH_INTERVAL)
        try:
            if not await blocking(access.still_running, session_id):
                return
        except TetherError:
            continue  # the store is out of reach: keep the relay, look again later
