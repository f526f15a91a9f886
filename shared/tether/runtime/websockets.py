"""The runtime's WebSockets (terminal, desktop, live logs): opened alike, and closed with code
4001 ("session ended") when the runtime stops, which the relay passes on to the client. The
runtime stops when its workspace is stopped or hibernated."""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web

SESSION_ENDED = 4001
_OPEN: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("open_websockets")


async def accept(request: web.Request, **options: Any) -> web.WebSocketResponse:
    """The upgrade answered: pinged every 30 s (through the relay, to the client itself) so a
    dead peer frees the stream, and never compressed (the streams are binary or tiny)."""
    ws = web.WebSocketResponse(heartbeat=30, compress=False, **options)
    await ws.prepare(request)
    request.app[_OPEN].add(ws)
    return ws


def close_on_shutdown(app: web.Application) -> None:
    app[_OPEN] = weakref.WeakSet[web.WebSocketResponse]()

    async def close_all(app: web.Application) -> None:
        for ws in app[_OPEN].copy():  # a copy: handlers end (and drop theirs) meanwhile
            await ws.close(code=SESSION_ENDED, message=b"session ended")

    app.on_shutdown.append(close_all)
