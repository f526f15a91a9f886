"""A desktop workspace as an Openctrol desktop: its own display, streamed to one viewer.

The relay opens `/openctrol` on the runtime for each viewer of the workspace (Openctrol's
`/openctrol/{session_id}/ws/desktop`) and speaks the desktop tunnel's protocol
(`tether.desktop.tunnel`) on it, as with a desktop agent's tunnel: it opens the viewer's
channel, passes its input, says when each frame was written. Here the runtime plays the
agent, with the same streamer (`tether.desktop.stream`), on the display the workspace's
desktop wrote to ~/.tether/display. It holds no credential of anyone's: what the relay
checked (the session token) stays in the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSMsgType, web

from tether.runtime import websockets

START_WAIT = 15.0  # seconds to wait for the display of a desktop that is starting
FPS = 30.0
MAX_MESSAGE = 64 * 1024  # the relay's own limit on what a viewer sends
SEND_BUFFER = 64 * 1024  # frames the viewer has not taken wait in the streamer, not here


async def _display(home: str) -> str | None:
    written = Path(home) / ".tether" / "display"
    deadline = asyncio.get_running_loop().time() + START_WAIT
    while asyncio.get_running_loop().time() < deadline:
        number = written.read_text().strip() if written.is_file() else ""
        if number.isdigit():
            return f":{number}"
        await asyncio.sleep(0.1)
    return None


async def desktop(request: web.Request, home: str) -> web.StreamResponse:
    from tether.desktop.stream import Streamer  # X and imaging libraries: desktops only

    display = await _display(home)
    if display is None:
        return web.json_response({"detail": "this workspace has no desktop"}, status=404)
    streamer = Streamer(display, request.query.get("agent_id", "workspace"), FPS)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, streamer.open)
    except Exception as exc:  # the display refused us (no XTEST, say)
        return web.json_response({"detail": f"the desktop cannot be opened: {exc}"}, status=502)
    ws = await websockets.accept(
        request, heartbeat=None, max_msg_size=MAX_MESSAGE, send_buffer=SEND_BUFFER
    )

    async def messages() -> AsyncIterator[str | bytes]:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                yield msg.data

    async def send(data: str | bytes) -> None:
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)

    try:
        await streamer.serve(messages(), send)
    finally:
        await loop.run_in_executor(None, streamer.close)
        await ws.close()
    return ws
