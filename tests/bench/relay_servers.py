"""Servers for the relay benchmark, each run as its own process (`echo SOCK` or `relay SOCK`):
an echo WebSocket server (the far end, on TCP for the direct baseline and on a Unix socket
behind the relay) and the real origin in front of it, with a session in a real SQLite
store pointing at the echo socket. Each prints one JSON line, then serves until killed."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from aiohttp import WSMsgType, web
from tether import bootstrap
from tether.core.lifecycle import SessionState
from tether.core.models import Role, Session
from tether.origin.server import Origin
from tether.runtime import websockets
from tether.settings import Settings


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes binary frames. Text frames steer a one-way test: `sink N` counts N binary
    frames and answers `done`; `source N` sends N frames of 64 KiB."""
    ws = await websockets.accept(request, max_msg_size=1 << 22)  # as the runtime's streams
    sink = 0
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            if sink:
                sink -= 1
                if not sink:
                    await ws.send_str("done")
            else:
                await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.TEXT:
            verb, count = msg.data.split()
            if verb == "sink":
                sink = int(count)
            else:
                payload = bytes(64 * 1024)
                for _ in range(int(count)):
                    await ws.send_bytes(payload)
    return ws


async def serve_echo(sock: str) -> None:
    """The far end, alone in its process as a workspace runtime is: on `sock` for the relay and
    on a TCP port for the direct baseline."""
    far = web.Application()
    websockets.close_on_shutdown(far)
    far.router.add_get("/pty", echo)
    runner = web.AppRunner(far, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, sock).start()
    direct = web.TCPSite(runner, "127.0.0.1", 0)
    await direct.start()
    print(json.dumps({"direct": port(direct)}), flush=True)
    await asyncio.Event().wait()


async def serve_relay(sock: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    services = bootstrap.build(Settings(home=home))
    bootstrap.install(services)
    services.auth.ensure_user("bench", Role.USER)
    key = services.auth.add_key("bench")
    session = Session(id="ws-bench", owner="bench", template="shell", platform="local",
                      agent_id="none", state=SessionState.RUNNING, url=f"http+unix://{sock}",
                      long_lived=True)  # fmt: skip
    services.sessions.repo.create(session.id, session)
    origin = Origin()  # the origin `tether up` and the relay service serve
    await origin.start("127.0.0.1", 0)
    print(json.dumps({"relay": origin.port, "key": key, "session": session.id}), flush=True)
    await asyncio.Event().wait()


def port(site: web.TCPSite) -> int:
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


if __name__ == "__main__":
    role, sock = sys.argv[1], sys.argv[2]
    asyncio.run(serve_echo(sock) if role == "echo" else serve_relay(sock))
