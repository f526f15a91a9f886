"""StreamSpace's sessions feed, `/api/v1/ws/sessions?token=`: the web UI's Sessions and viewer
pages list the caller's sessions from its `sessions_update` messages, never from a GET.

Like StreamSpace's own server, it sends the caller's live sessions (terminated ones left out,
newest first) every few seconds, each in the shape `GET /api/v1/sessions/{id}` answers. A
message costs one store query (no count); a credential revoked meanwhile closes the feed with
4401, as it does a shell.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tether import bootstrap, errors
from tether.core.models import Principal, utcnow
from tether.relay import access, streams
from tether.relay.streams import WS_OPTIONS, blocking
from tether.surfaces.http import status_for

PATH = "/api/v1/ws/sessions"
INTERVAL = 3.0  # seconds between messages (StreamSpace's server: 3)
LIMIT = 200  # sessions a message lists at most: the newest


def update(who: Principal) -> str:
    """The next message for `who`; raises Unauthenticated once their access is revoked."""
    from tether.surfaces.http import iso
    from tether.surfaces.streamspace import session_json  # the surface's one shape

    services = bootstrap.services()
    services.auth.current(who)
    page = services.sessions.listed(
        who, descending=True, limit=LIMIT, counted=False,
        owner=who.id if who.is_admin else None,  # an admin's own, as anyone's
    )  # fmt: skip
    sessions = [session_json(s).model_dump(mode="json") for s in page.items]
    return json.dumps({
        "type": "sessions_update", "sessions": sessions, "count": len(sessions),
        "timestamp": iso(utcnow()),
    })  # fmt: skip


async def sessions_feed(request: web.Request) -> web.StreamResponse:
    refuse = streams.streamspace_refusal
    ws = web.WebSocketResponse(**WS_OPTIONS)
    if not streams.upgrading(request) or not ws.can_prepare(request).ok:
        return refuse(errors.Invalid("This path is a WebSocket: ask for an upgrade"), 400)
    if not access.same_origin(request.headers.get("Origin"), request.host):
        return refuse(errors.Forbidden("Cross-origin WebSocket refused"), 403)
    try:
        who = await blocking(
            access.principal, "", request.query,
            request.headers.get("Authorization"), request.headers.get("X-API-Key"),
        )  # fmt: skip
    except errors.TetherError as exc:
        streams.audited(request, None, "relay.connect", "sessions-feed", "refused")
        return refuse(exc, status_for(exc))
    await ws.prepare(request)
    streams.audited(request, who, "relay.connect", "sessions-feed", "ok")
    closed = asyncio.ensure_future(_until_closed(ws))
    try:
        while not closed.done():
            try:
                await ws.send_str(await blocking(update, who))
            except errors.Unauthenticated:
                await ws.close(code=access.ACCESS_REVOKED, message=b"access revoked")
                break
            except errors.TetherError:  # the store away a moment: the next round tries again
                pass
            except ConnectionError:  # the client left
                break
            await asyncio.wait([closed], timeout=INTERVAL)
    finally:
        closed.cancel()
        streams.audited(
            request, who, "relay.disconnect", "sessions-feed", ws.close_code or "closed"
        )
    return ws


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Reads (and drops) what the client sends, so pings and its close are answered."""
    async for _ in ws:
        pass
