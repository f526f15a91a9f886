"""The relay's routes: the OnMemOS shell protocol (JSON commands over a WebSocket), the
relayed streams (`tether.relay.streams`), the viewer page and noVNC's files.

Everything is checked before the upgrade (credential, ownership, Origin): a refused caller
gets a plain HTTP error and nothing is relayed. Blocking Store calls run in a thread pool.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import WSMsgType, web

from tether import bootstrap
from tether.core.models import Principal
from tether.errors import TetherError
from tether.relay import access, agentchat, desktop, executor, feed, passthrough, streams
from tether.relay.streams import WS_OPTIONS, blocking
from tether.runtime.websockets import SESSION_ENDED
from tether.surfaces.http import status_for

SHELL_EXEC = "onmemos.shell_command"  # a command run over the shell: an exec, in the audit log


async def shell(request: web.Request) -> web.StreamResponse:
    """OnMemOS: `{"type": "command", "command": ...}` in, `{"type": "command_result", ...}` out."""
    ws = web.WebSocketResponse(**WS_OPTIONS)
    allowed = await streams.authorize(request, ws)
    if isinstance(allowed, web.Response):
        return streams.refused(request, None, request.match_info["session_id"], allowed)
    principal, session = allowed
    await ws.prepare(request)
    streams.audited(request, principal, "relay.connect", session.id, "ok")
    watcher = asyncio.ensure_future(close_when_it_must(ws, principal, session.id))
    try:
        await _serve_commands(request, ws, principal, session.id)
    finally:
        watcher.cancel()
        closed = ws.close_code if ws.close_code is not None else "closed"
        streams.audited(request, principal, "relay.disconnect", session.id, closed)
    return ws


async def _serve_commands(
    request: web.Request, ws: web.WebSocketResponse, principal: Principal, session_id: str
) -> None:
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
            streams.audited(request, principal, SHELL_EXEC, session_id, status_for(exc))
            await ws.send_json({"type": "error", "detail": exc.message})
            continue
        streams.audited(request, principal, SHELL_EXEC, session_id, 200)
        await ws.send_json({"type": "command_result", "command": command, **result.model_dump()})


async def close_when_it_must(ws: web.WebSocketResponse, who: Principal, session_id: str) -> None:
    """A session that ends (terminated, hibernated, expired) closes its shell (4001), and so
    does the caller's access being revoked (4401)."""
    if await streams.until_it_must_end(who, session_id) == "revoked":
        await ws.close(code=access.ACCESS_REVOKED, message=b"access revoked")
    else:
        await ws.close(code=SESSION_ENDED, message=b"session ended")


VIEWER = Path(__file__).with_name("viewer.html")
NOVNC = Path(__file__).with_name("static") / "novnc"


async def vnc_viewer(request: web.Request) -> web.StreamResponse:
    """The viewer page, which holds no secret: it opens the desktop's WebSocket (the same path,
    relayed by `tether.relay.streams`) with the URL's credential."""
    return web.FileResponse(VIEWER, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application, otherwise: streams.Handler) -> None:
    """The relay's routes; `otherwise` serves plain requests to their paths (a log read, the
    shell's connection info that onmemos-sdk's `get_connection_info` asks for)."""

    async def shell_or_info(request: web.Request) -> web.StreamResponse:
        return await (shell if streams.upgrading(request) else otherwise)(request)

    for prefix in ("/v1/cloudrun/workspaces", "/v1/sessions"):
        app.router.add_get(prefix + "/{session_id}/shell", shell_or_info)
    # OnMemOS's GKE shell, where starbase's scripts and onmemos-sdk's get_shell_url open it
    # (`?k8s_ns=&pod=` name the pod, which the session already does): the same protocol.
    app.router.add_get("/v1/gke/shell/{session_id}", shell_or_info)
    for route in streams.ROUTES:
        plain = vnc_viewer if route.page else otherwise
        app.router.add_route("*", route.path, streams.handler(route, plain))
    app.router.add_get(feed.PATH, feed.sessions_feed)  # StreamSpace's web UI's session list
    app.router.add_get(executor.PATH, executor.executor_stream)  # Kubently's executors
    desktop.add_routes(app)  # Openctrol's desktops: the agents' tunnels and their viewers
    agentchat.add_routes(app, otherwise)  # SentinelStacks' agents: chat and events
    passthrough.add_routes(app, otherwise)  # streamed commands, processes, files, ports
    if NOVNC.is_dir():  # vendored by `make install` (npm), never fetched from a CDN
        app.router.add_static("/novnc/", NOVNC)
