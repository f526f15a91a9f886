"""RFB over a WebSocket: binary frames to and from the workspace's VNC server socket."""

from __future__ import annotations

import asyncio
import contextlib
import os

from aiohttp import WSMsgType, web

from tether.runtime import websockets

READ_CHUNK = 65536
START_WAIT = 15.0  # seconds to wait for the VNC server of a desktop that is starting


async def vnc(request: web.Request, home: str, socket_path: str) -> web.StreamResponse:
    # Connect by a path relative to our working directory (the home): short enough for AF_UNIX.
    path = os.path.relpath(os.path.join(home, socket_path))
    deadline = asyncio.get_running_loop().time() + START_WAIT
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            break
        except OSError:
            # Right after a start or wake the desktop may still be coming up.
            if asyncio.get_running_loop().time() > deadline:
                return web.json_response(
                    {"detail": "this workspace has no VNC server running"}, status=404
                )
            await asyncio.sleep(0.1)
    ws = await websockets.accept(request, max_msg_size=1 << 22, protocols=("binary",))

    async def to_client() -> None:
        while data := await reader.read(READ_CHUNK):
            await ws.send_bytes(data)  # waits for the socket: a slow viewer slows the server

    async def to_server() -> None:
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            writer.write(msg.data)
            await writer.drain()

    pumps = [asyncio.ensure_future(to_client()), asyncio.ensure_future(to_server())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await ws.close()
    return ws
