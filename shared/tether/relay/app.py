"""The relay's aiohttp app: the OnMemOS shell protocol (JSON commands over a WebSocket), the
viewer page and noVNC's files. (Terminal, desktop and live-log WebSockets are byte relays,
served from the origin's connection threads: `tether.relay.streams`.)

Everything is checked before the upgrade (credential, ownership, Origin): a refused caller
gets a plain HTTP error and nothing is relayed. Blocking Store calls run in the executor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tether import bootstrap
from tether.core.models import Principal, Session
from tether.errors import TetherError
from tether.relay import access
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


async def authorize(request: web.Request) -> tuple[Principal, Session]:
    if not access.same_origin(request.headers.get("Origin"), request.host):
        raise web.HTTPForbidden(
            text=json.dumps({"detail": "Cross-origin WebSocket refused"}),
            content_type="application/json",
        )
    try:
        return await blocking(
            access.authorize,
            request.match_info["session_id"],
            request.query,
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
        )
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


async def close_when_session_ends(ws: web.WebSocketResponse, session_id: str) -> None:
    """A session that ends (terminated, hibernated, expired) closes its shell."""
    while not ws.closed:
        await asyncio.sleep(access.WATCH_INTERVAL)
        if not await blocking(access.still_running, session_id):
            await ws.close(code=4001, message=b"session ended")
            return


VIEWER = Path(__file__).with_name("viewer.html")
NOVNC = Path(__file__).with_name("static") / "novnc"


async def vnc_viewer(request: web.Request) -> web.StreamResponse:
    """The viewer page, which holds no secret: it opens the desktop's WebSocket (the same path,
    relayed by `tether.relay.streams`) with the URL's credential."""
    return web.FileResponse(VIEWER, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1/cloudrun/workspaces", "/v1/sessions"):
        app.router.add_get(prefix + "/{session_id}/shell", shell)
    app.router.add_get("/vnc-viewer/{session_id}", vnc_viewer)
    if NOVNC.is_dir():  # vendored by `make install` (npm), never fetched from a CDN
        app.router.add_static("/novnc/", NOVNC)
