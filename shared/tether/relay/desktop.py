"""Openctrol's desktops in the relay: each desktop agent's tunnel, and its viewers.

A desktop agent dials `/openctrol/{agent_id}/tunnel` with its owner's API key and keeps it
open; a viewer (the Home Assistant integration, its card, any Openctrol client) opens
`/openctrol/{agent_id}/ws/desktop?sess=&token=` with what `POST .../sessions/desktop` gave it.
The relay checks the viewer before the upgrade (`Desktops.admit`: the token, its session,
the failure rate), numbers it on the agent's tunnel, and passes its messages both ways
(`tether.desktop.tunnel`). It never waits on a viewer while reading the tunnel: each viewer
has its own writer, holding at most the one frame the agent let it have, and says `sent` when
that frame is written, so a viewer that never reads (the integration's input socket does not)
holds one frame and slows only itself.

Viewers' sockets have no ping: the integration never reads, so it never answers one (the real
agent does not ping either); TCP keepalive notices a viewer that vanished. A viewer's message
over 64 KiB closes it with 1009, as the real agent does. The tunnel and its viewers must meet
in one relay process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tether import bootstrap, errors
from tether.core.models import DesktopSession, Principal, Session
from tether.desktop import tunnel
from tether.errors import TetherError
from tether.provision.uds import connect_unix
from tether.relay import access, streams
from tether.relay.streams import _keep_alive, blocking, runtime_address, upgrading
from tether.surfaces import shapes
from tether.surfaces.http import forwarded_client, proxy_matcher, status_for

log = logging.getLogger(__name__)

VIEWER_PATH = "/openctrol/{agent_id}/ws/desktop"
MAX_VIEWER_MESSAGE = 64 * 1024  # the real agent's limit
MAX_TUNNEL_MESSAGE = 16 * 1024 * 1024  # a frame of a large screen at a high quality
VIEWER_SEND_BUFFER = 64 * 1024
MAX_TEXTS_QUEUED = 64  # text messages waiting for a viewer (hello, errors); more are dropped
AGENT_GONE = (1001, "desktop agent disconnected")
SESSION_ENDED = (1000, "Session ended")
_PORT = re.compile(r":\d+$")  # the HA integration appends its port to the path (no path field)


def agent_of(request: web.Request) -> str:
    return _PORT.sub("", request.match_info["agent_id"])


def refusal(error: TetherError, status: int | None = None) -> web.Response:
    """A refused request in Openctrol's error shape."""
    made = shapes.openctrol(error, status or status_for(error))
    return web.Response(status=made.status_code, body=made.get_data(), content_type=made.mimetype)


@dataclass(eq=False)
class Viewer:
    """A viewer's socket and what waits to be written to it: its texts in order, and one
    frame, the latest (an agent waits for `sent` before the next; one that does not only
    replaces the frame still waiting)."""

    channel: int
    ws: web.WebSocketResponse
    texts: deque[str] = field(default_factory=deque)
    frame: bytes | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    closing: asyncio.Task[None] | None = None

    def close(self, code: int, reason: str) -> None:
        """Close it now, even while its writer waits on a viewer that does not read (the
        frame it was writing is whole in the socket's buffer: only the wait is cut)."""
        if self.writer is not None:
            self.writer.cancel()
        self.closing = asyncio.ensure_future(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())


class Tunnel:
    """One desktop's connection (an agent's tunnel, or a workspace runtime's) and the viewers
    it carries. `send` sends on it."""

    def __init__(
        self,
        agent_id: str,
        send: Callable[[str | bytes], Awaitable[None]],
        close: Callable[[], Awaitable[Any]],
    ) -> None:
        self.agent_id = agent_id
        self.send = send
        self.close = close
        self.viewers: dict[int, Viewer] = {}
        self._next = 0

    def open(self, ws: web.WebSocketResponse) -> Viewer:
        self._next = self._next % tunnel.MAX_CHANNEL + 1
        viewer = Viewer(self._next, ws)
        self.viewers[viewer.channel] = viewer
        return viewer

    async def control(self, op: str, channel: int, **fields: Any) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, ConnectionClosed):  # gone
            await self.send(json.dumps(tunnel.control(op, channel, **fields)))

    async def forward(self, channel: int, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, ConnectionClosed):
            await self.send(tunnel.pack(channel, tunnel.TEXT, text.encode()))

    def receive(self, message: str | bytes) -> None:
        """A message from the desktop: a viewer's, queued for its writer, or control."""
        try:
            if isinstance(message, bytes):
                self._deliver(message)
            else:
                self._control(message)
        except (ValueError, KeyError, TypeError):
            log.warning("desktop %s sent a malformed message", self.agent_id)

    def _deliver(self, data: bytes) -> None:
        message = tunnel.unpack(data)
        viewer = self.viewers.get(message.channel)
        if viewer is None:
            return
        if message.kind == tunnel.FRAME:
            viewer.frame = message.payload
        elif len(viewer.texts) < MAX_TEXTS_QUEUED:
            viewer.texts.append(message.payload.decode(errors="replace"))
        viewer.ready.set()

    def _control(self, text: str) -> None:
        msg = json.loads(text)
        if msg["op"] == tunnel.CLOSE:
            code = int(msg.get("code", 1000))
            code = code if code == 1000 or 4000 <= code <= 4999 else 1000  # a valid one
            self.close_viewer(int(msg["ch"]), code, str(msg.get("reason", ""))[:120])

    def close_viewer(self, channel: int, code: int, reason: str) -> None:
        viewer = self.viewers.pop(channel, None)
        if viewer is not None:
            viewer.close(code, reason)

    def close_all(self, why: tuple[int, str]) -> None:
        for channel in list(self.viewers):
            self.close_viewer(channel, *why)


TUNNELS: dict[str, Tunnel] = {}


def _claim(request: web.Request, agent_id: str, connection: str) -> Principal:
    who = access.principal(
        agent_id, {}, request.headers.get("Authorization"), request.headers.get("X-API-Key")
    )
    bootstrap.services().desktops.claim(who, agent_id, connection)
    return who


async def agent_tunnel(request: web.Request) -> web.StreamResponse:
    """`/openctrol/{agent_id}/tunnel`: a desktop agent dialling in. A new tunnel of an agent
    replaces its old one (whose viewers are closed: the agent dropped them)."""
    agent_id = agent_of(request)
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=MAX_TUNNEL_MESSAGE)
    if not upgrading(request) or not ws.can_prepare(request).ok:
        return refusal(errors.Invalid("WebSocket upgrade required", code="invalid_request"), 400)
    connection = uuid.uuid4().hex
    try:
        who = await blocking(_claim, request, agent_id, connection)
    except TetherError as refused:
        streams.audited(request, None, "relay.connect", agent_id, "refused")
        return refusal(refused)
    await ws.prepare(request)
    streams.audited(request, who, "relay.connect", agent_id, "ok")

    async def send(data: str | bytes) -> None:
        await (ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data))

    async def replaced() -> None:
        await ws.close(code=1000, message=b"replaced by a new tunnel")

    current = Tunnel(agent_id, send, replaced)
    old, TUNNELS[agent_id] = TUNNELS.get(agent_id), current
    if old is not None:
        old.close_all(AGENT_GONE)
        await old.close()
    log.info("desktop agent %s connected", agent_id)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY or msg.type is WSMsgType.TEXT:
                current.receive(msg.data)
    finally:
        if TUNNELS.get(agent_id) is current:
            del TUNNELS[agent_id]
        current.close_all(AGENT_GONE)
        with contextlib.suppress(TetherError):  # the store is down: the next tunnel's write
            await blocking(bootstrap.services().desktops.disconnected, agent_id, connection)
        streams.audited(request, who, "relay.disconnect", agent_id, ws.close_code or "closed")
        log.info("desktop agent %s disconnected", agent_id)
    return ws


def _client(request: web.Request) -> str:
    settings = bootstrap.services().settings
    forwarded = request.headers.getall("X-Forwarded-For", [])
    return forwarded_client(
        request.remote or "unknown", forwarded, proxy_matcher(settings.trusted_proxies)
    )


async def viewer(request: web.Request) -> web.StreamResponse:
    """`/openctrol/{agent_id}/ws/desktop?sess=&token=`: a viewer of the agent's desktop."""
    agent_id = agent_of(request)
    ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=MAX_VIEWER_MESSAGE)
    if not upgrading(request) or not ws.can_prepare(request).ok:
        return refusal(errors.Invalid("WebSocket upgrade required", code="invalid_request"), 400)
    try:
        session = await blocking(
            bootstrap.services().desktops.admit,
            agent_id,
            request.query.get("sess", ""),
            request.query.get("token", ""),
            _client(request),
        )
    except TetherError as refused:
        streams.audited(request, None, "relay.connect", agent_id, "refused")
        return refusal(refused)
    workspace = None
    if session.workspace:  # a desktop workspace's runtime, dialled for this viewer
        try:
            workspace = await _dial_workspace(agent_id)
        except TetherError as refused:
            return refusal(refused)
        link = workspace.link
    elif (found := TUNNELS.get(agent_id)) is not None:
        link = found
    else:
        gone = errors.Unavailable(f"Desktop agent {agent_id} is not connected to the relay")
        return refusal(gone, 503)
    try:
        return await _serve_viewer(request, ws, link, session, workspace)
    finally:
        if workspace is not None:
            await workspace.close()


async def _serve_viewer(
    request: web.Request,
    ws: web.WebSocketResponse,
    link: Tunnel,
    session: DesktopSession,
    workspace: WorkspaceLink | None,
) -> web.StreamResponse:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:  # asyncio's TransportSocket: setsockopt passes through
        _keep_alive(sock)
        # A fixed, small send buffer (no autotuning up to megabytes): frames a viewer has not
        # taken wait here, not in the kernel, so the one the agent sends next is current.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SEND_BUFFER)
    await ws.prepare(request)
    streams.audited(request, session.owner, "relay.connect", session.id, "ok")
    seat = link.open(ws)
    seat.writer = writer = asyncio.ensure_future(_write(link, seat))
    await link.control(tunnel.OPEN, seat.channel, session_id=session.id,
                       expires_at=session.expires_at.isoformat())  # fmt: skip
    # An agent closes the viewers of a session that ends (it is told); a workspace's runtime
    # is not, so the relay looks for the end itself.
    watch = asyncio.ensure_future(_until_ended(link, seat, session.id)) if workspace else None
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await link.forward(seat.channel, msg.data)
            # Binary input means nothing in Openctrol: ignored, as the real agent does.
    finally:
        if link.viewers.pop(seat.channel, None) is not None:
            await link.control(tunnel.CLOSE, seat.channel)
        for task in (writer, watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        closed = ws.close_code or "closed"
        streams.audited(request, session.owner, "relay.disconnect", session.id, closed)
    return ws


async def _until_ended(link: Tunnel, seat: Viewer, session_id: str) -> None:
    while True:
        await asyncio.sleep(access.WATCH_INTERVAL)
        with contextlib.suppress(TetherError):  # the store out of reach: look again later
            if not await blocking(bootstrap.services().desktops.live, session_id):
                link.close_viewer(seat.channel, *SESSION_ENDED)
                return


@dataclass
class WorkspaceLink:
    """A desktop workspace's runtime, dialled for one viewer: it speaks the tunnel's protocol
    (`tether.runtime.desktop`). The runtime is the workspace's, so what it sends is held to
    the same bounds as an agent's: one frame waiting per viewer, a few texts."""

    link: Tunnel
    connection: ClientConnection
    reader: asyncio.Task[None]

    async def close(self) -> None:
        self.reader.cancel()
        await self.connection.close()


async def _dial_workspace(session_id: str) -> WorkspaceLink:
    """The runtime of `session_id`'s desktop, or the error to answer (503: it is not running,
    or its runtime cannot be reached)."""
    found: Session | None = await blocking(bootstrap.services().desktops.workspace, session_id)
    if found is None:
        raise errors.Unavailable(f"Workspace {session_id} is not running")
    address = await runtime_address(found, f"/openctrol?agent_id={found.id}")
    options: dict[str, Any] = {"max_size": MAX_TUNNEL_MESSAGE, "open_timeout": 10,
                               "additional_headers": address.headers}  # fmt: skip
    try:
        if address.unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await blocking(connect_unix, sock, address.unix)
            except OSError:
                sock.close()
                raise
            options["sock"] = sock
        connection = await connect(address.uri, **options)
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise errors.Unavailable(f"The workspace's desktop answered {status}") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise errors.Unavailable(f"The workspace's desktop is unreachable: {exc}") from None
    link = Tunnel(found.id, connection.send, connection.close)

    async def read() -> None:
        try:
            async for message in connection:
                link.receive(message)
        except ConnectionClosed:
            pass
        finally:
            link.close_all(AGENT_GONE)

    return WorkspaceLink(link, connection, asyncio.ensure_future(read()))


async def _write(link: Tunnel, seat: Viewer) -> None:
    """A viewer's writer: its texts in order, then the waiting frame; after a frame, `sent`."""
    while True:
        await seat.ready.wait()
        seat.ready.clear()
        try:
            while seat.texts:
                await seat.ws.send_str(seat.texts.popleft())
            frame, seat.frame = seat.frame, None
            if frame is not None:
                await seat.ws.send_bytes(frame)
                await link.control(tunnel.SENT, seat.channel)
        except (ConnectionError, RuntimeError):
            return  # the viewer is gone: its reader ends too


def add_routes(app: web.Application) -> None:
    app.router.add_get(tunnel.PATH, agent_tunnel)
    app.router.add_get(VIEWER_PATH, viewer)
