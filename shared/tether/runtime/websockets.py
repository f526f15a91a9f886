"""The runtime's WebSockets (terminal, desktop, live logs): opened alike, and closed with code
4001 ("session ended") when the runtime stops, which the relay passes on to the client. The
runtime stops when its workspace is stopped or hibernated."""

from __future__ import annotations

import socket
import weakref
from typing import Any

from aiohttp import web

SESSION_ENDED = 4001
# The local relay's Unix-socket connections get a bigger send buffer than the kernel's default
# 208 KiB, on both ends: bytes then cross in fewer, larger pieces, for fewer wakeups on either
# side (a quarter as many context switches per MB; more than 1 MiB gained nothing). TCP sizes
# its own buffers.
UNIX_SEND_BUFFER = 1 << 20
_OPEN: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("open_websockets")


async def accept(
    request: web.Request,
    heartbeat: float | None = 30,
    send_buffer: int = UNIX_SEND_BUFFER,
    **options: Any,
) -> web.WebSocketResponse:
    """The upgrade answered: pinged every 30 s (through the relay, to the client itself) so a
    dead peer frees the stream, and never compressed (the streams are binary or tiny)."""
    ws = web.WebSocketResponse(heartbeat=heartbeat, compress=False, **options)
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    request.app[_OPEN].add(ws)
    return ws


def close_on_shutdown(app: web.Application) -> None:
    app[_OPEN] = weakref.WeakSet[web.WebSocketResponse]()

    async def close_all(app: web.Application) -> None:
        for ws in app[_OPEN].copy():  # a copy: handlers end (and drop theirs) meanwhile
            await ws.close(code=SESSION_ENDED, message=b"session ended")

    app.on_shutdown.append(close_all)
