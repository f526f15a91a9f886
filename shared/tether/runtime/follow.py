"""Live session log over a WebSocket: the last lines, then each new one as it is written."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import web

from tether.runtime import websockets
from tether.runtime.session_log import SESSION_LOG, open_in_home, tail

POLL = 0.2  # seconds between looks at the file's size


def _size(home: Path) -> int:
    try:
        with open_in_home(home, SESSION_LOG) as f:
            return f.seek(0, os.SEEK_END)
    except OSError:
        return 0


def _read_from(home: Path, offset: int) -> bytes:
    try:
        with open_in_home(home, SESSION_LOG) as f:
            f.seek(offset)
            return f.read(1 << 20)
    except OSError:
        return b""


async def follow(request: web.Request, home: str) -> web.WebSocketResponse:
    """One text frame per line; the client closing ends it."""
    root = Path(home)
    try:
        first = max(0, min(10_000, int(request.query.get("tail", "100"))))
    except ValueError:
        first = 100
    ws = await websockets.accept(request)
    offset = _size(root)
    for text in tail(root, first):
        await ws.send_str(text)
    partial = b""
    closed = asyncio.ensure_future(ws.receive())  # any message or a close ends the stream
    try:
        while not closed.done():
            chunk = await asyncio.get_running_loop().run_in_executor(None, _read_from, root, offset)
            if chunk:
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    await ws.send_str(line.decode("utf-8", errors="replace"))
                continue
            await asyncio.wait([closed], timeout=POLL)
    finally:
        closed.cancel()
        await ws.close()
    return ws
