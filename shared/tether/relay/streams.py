"""Relayed streams: a session's terminal, desktop (VNC) and live logs, each a WebSocket between
the client and the session's runtime. Live logs are also followed over plain HTTP
(`follow_lines`: Server-Sent Events or chunked text, for curl and EventSource).

Both handshakes are a library's: aiohttp answers the client's upgrade, and `websockets`' client
protocol makes and checks the request to the runtime. Everything is checked before the upgrade
is answered (the handshake's validity, Origin, credential, ownership, that the runtime
answers): a refused caller gets a plain HTTP error and nothing is relayed.

Then the bytes pass through untouched, in both directions on the event loop (client frames
stay masked, as the runtime expects of a client): a frame costs a write, not a parse and a
re-mask. A side whose peer cannot take more stops being read, so a slow reader slows the other
end instead of growing memory. Pings and close frames pass through too: the runtime pings the
client, and closes its streams (4001) when the session ends. A stream whose session has ended
and whose runtime has not closed it within `CLOSE_GRACE` is cut.

The relay counts the runtime's frames as they pass (their headers only: `_Frames`), so it can
put frames of its own between two of them, built by websockets: a ping when the client has
sent nothing for `Limits.ws_ping` seconds (a client that does not answer within half that,
stopped or gone without a word, has both legs freed: `_Pings`), and a close (1001, going away)
when the server stops (`tether.origin.server`). A leg that cannot flush what it holds (its peer
stopped reading) is aborted rather than kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

from aiohttp import web
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tether import bootstrap, errors
from tether.core.models import ActivitySource, Principal, Session, utcnow
from tether.errors import TetherError
from tether.origin.guard import CONNECTIONS, MAX_HEAD, RELAYED, Splice
from tether.provision.uds import connect_unix
from tether.relay import access, recording
from tether.runtime import auth
from tether.runtime.websockets import UNIX_SEND_BUFFER
from tether.service import audit, metrics
from tether.surfaces.http import request_id as bound_id
from tether.surfaces.http import status_for

T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_FRAME = 1 << 20  # bytes of one client message; a larger one closes the connection
WS_OPTIONS: dict[str, Any] = {
    "heartbeat": 30,  # ping/pong: a dead client frees both legs
    "compress": False,  # no permessage-deflate: the streams are binary or tiny
    "max_msg_size": MAX_FRAME,
}
CLOSE_GRACE = 5.0  # seconds an ended session's runtime has to close its streams itself
GOING_AWAY_GRACE = 2.0  # seconds a client told the server is stopping has to answer the close
# The relay's own frames to a client (server frames: unmasked), put between the runtime's.
PING = Frame(Opcode.PING, b"tether").serialize(mask=False)
GOING_AWAY = Frame(
    Opcode.CLOSE, Close(CloseCode.GOING_AWAY, "server stopping").serialize()
).serialize(mask=False)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Store calls and shell commands (which last as long as the command) run here, not on the
# loop's small default pool, so long commands cannot starve new connections' checks.
_threads = ThreadPoolExecutor(64, thread_name_prefix="relay")


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_threads, fn, *args)


_REQUEST_ID = web.RequestKey("request_id", str)


def request_id(request: web.Request) -> str:
    """The request's id (`X-Request-Id`: the client's, if well formed, else one made here),
    the same each time it is asked for: its answer carries it (`tether.origin.apps`)."""
    found = request.get(_REQUEST_ID)
    if found is None:
        found = request[_REQUEST_ID] = audit.request_id(request.headers.get(audit.HEADER))
    return found


def audited(
    request: web.Request,
    who: Principal | str | None,
    action: str,
    target: str,
    result: str | int,
) -> None:
    """Records a relayed call in the audit log (`tether.service.audit`), without waiting: the
    write runs on the relay's threads, its time taken now, and a failure is only logged.
    `relay.connect` with result "ok" and `relay.disconnect` also move the gauge of open relayed
    connections: a disconnect is recorded once for each connect that was "ok"."""
    if action == "relay.connect" and str(result) == "ok":
        metrics.relay_opened()
    elif action == "relay.disconnect":
        metrics.relay_closed()
    when, made = utcnow(), request_id(request)

    def record() -> None:
        try:
            bootstrap.services().audit.record(who, action, target, result, made, when)
        except Exception:  # the services themselves out of reach
            audit.log.exception("audit: %s %s not recorded", action, target)

    with contextlib.suppress(RuntimeError):  # the relay is shutting down: its pool is gone
        asyncio.get_running_loop().run_in_executor(_threads, record)


def onmemos_refusal(error: TetherError, status: int) -> web.Response:
    """A refused upgrade in OnMemOS's error shape."""
    body = {"detail": error.message, "code": error.details.get("code"), "request_id": bound_id()}
    return web.json_response(body, status=status)


def streamspace_refusal(error: TetherError, status: int) -> web.Response:
    """A refused upgrade in StreamSpace's error shape (its clients read `error`, `code`)."""
    from tether.surfaces import streamspace  # only StreamSpace's routes need it

    made = streamspace.render_error(error, status)
    return web.Response(status=made.status_code, body=made.get_data(), content_type=made.mimetype)


Refusal = Callable[[TetherError, int], web.Response]


# The error a refusal given by status is (its surface's renderer names its code from it).
_KINDS: dict[int, type[TetherError]] = {
    400: errors.Invalid,
    403: errors.Forbidden,
    404: errors.NotFound,
    502: errors.Unavailable,
    503: errors.Unavailable,
}


@dataclass(frozen=True)
class Route:
    path: str  # aiohttp's pattern; the session's id is {session_id}
    runtime_path: str  # may name the path's other parts: /processes/{pid}/output
    query: dict[str, str | None] = field(default_factory=dict)  # passed on; None: if given
    every_query: bool = False  # the whole query string passed on (a port's own)
    source: ActivitySource = "terminal"  # what it counts as while it is open
    protocols: tuple[str, ...] = ()  # subprotocols offered to the runtime and accepted
    desktop: bool = False  # the session must have one
    # Only with `?follow=true` (a plain request without it is the path's function's); a plain
    # GET with it is followed over HTTP (`follow_lines`).
    follow_only: bool = False
    page: bool = False  # a plain GET is the viewer page (else the path's function answers it)
    by_name: bool = False  # the session may be named by its name (StreamSpace's clients do)
    refuse: Refusal = onmemos_refusal  # the error shape of the path's surface

    def refusal(self, status: int, message: str, code: str | None = None) -> web.Response:
        kind = _KINDS.get(status, TetherError)
        return self.refuse(kind(message, **({"code": code} if code else {})), status)

    def wanted(self, request: web.Request) -> bool:
        """Whether `request` is this route's upgrade (else the path's plain handler serves it)."""
        return upgrading(request) and (follows(request) or not self.follow_only)


def upgrading(request: web.Request) -> bool:
    """Whether `request` asks for a WebSocket."""
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def follows(request: web.Request) -> bool:
    return request.query.get("follow", "").lower() in ("true", "1")


ROUTES = (
    Route("/v1/sessions/{session_id}/terminal", "/pty", {"cols": None, "rows": None}),
    Route("/vnc-viewer/{session_id}", "/vnc", protocols=("binary",), desktop=True, page=True,
          by_name=True, refuse=streamspace_refusal, source="desktop"),
    # The desktop where StreamSpace's own viewer page and UI open it.
    Route("/api/v1/vnc/{session_id}", "/vnc", protocols=("binary",), desktop=True,
          by_name=True, refuse=streamspace_refusal, source="desktop"),
    Route("/api/v1/sessions/{session_id}/logs", "/logs/follow", {"tail": "100"},
          follow_only=True, by_name=True, refuse=streamspace_refusal, source="api"),
)  # fmt: skip


def handler(route: Route, otherwise: Handler) -> Handler:
    """The route's path: its WebSocket relayed, any other request to `otherwise`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.wanted(request):
            return await serve(request, route)
        if route.follow_only and request.method == "GET" and follows(request):
            return await follow_lines(request, route)
        return await otherwise(request)

    return handle


SHELL = Route("/v1/sessions/{session_id}/shell", "")  # OnMemOS's JSON shell (tether.relay.app)


async def authorize(
    request: web.Request, ws: web.WebSocketResponse, route: Route = SHELL
) -> tuple[Principal, Session] | web.Response:
    """The caller and its running session, or the answer that refuses the upgrade to `ws`."""
    if not ws.can_prepare(request).ok:
        return route.refusal(400, "A WebSocket upgrade needs Sec-WebSocket-Key and version 13")
    return await admit(request, route)


async def admit(request: web.Request, route: Route) -> tuple[Principal, Session] | web.Response:
    """The caller and its running session, or the answer that refuses them (Origin, credential,
    ownership)."""
    if not access.same_origin(request.headers.get("Origin"), request.host):
        kind = "WebSocket" if upgrading(request) else "stream"
        return route.refusal(403, f"Cross-origin {kind} refused")
    try:
        return await blocking(
            access.authorize,
            request.match_info["session_id"],
            request.query,
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
            not route.follow_only,  # live logs change nothing: a read-only key may follow them
            route.by_name,
        )
    except TetherError as exc:
        return route.refuse(exc, status_for(exc))


async def serve(
    request: web.Request, route: Route, admitted: tuple[Principal, Session] | None = None
) -> web.StreamResponse:
    """Relays the upgrade, checked here unless the caller has `admitted` it (a preview link)."""
    # No heartbeat and no reader of aiohttp's: once upgraded, the connection's bytes are ours.
    ws = web.WebSocketResponse(protocols=route.protocols, compress=False)
    named = request.match_info.get("session_id", "")
    if admitted is not None and not ws.can_prepare(request).ok:
        bad = route.refusal(400, "A WebSocket upgrade needs Sec-WebSocket-Key and version 13")
        return refused(request, None, named, bad)
    allowed = admitted or await authorize(request, ws, route)
    if isinstance(allowed, web.Response):
        return refused(request, None, named, allowed)
    who, session = allowed
    if route.desktop and not session.vnc:
        none = route.refusal(404, "This session has no desktop", "SESSION_NOT_FOUND")
        return refused(request, who, session.id, none)
    connection = request.app[CONNECTIONS].guard(request.transport)
    if connection is None:  # gone while it was checked
        return refused(request, who, session.id, route.refusal(503, "The connection closed"))
    query = {k: request.query.get(k, default) for k, default in route.query.items()}
    path = route.runtime_path.format_map(request.match_info) + "?" + (
        request.query_string if route.every_query else
        urlencode({k: v for k, v in query.items() if v is not None})
    )  # fmt: skip
    try:
        runtime, _ = await _open_runtime(session, path.rstrip("?"), route.protocols)
    except _Refused as no:
        return refused(request, who, session.id, route.refusal(no.status, no.detail))
    client = _Side(connection.transport)
    client.count = metrics.relay_bytes("to_workspace")
    runtime.count = metrics.relay_bytes("to_client")
    runtime.frames = _Frames()  # so the relay can put its own frames between the runtime's
    recorder = None
    if route.runtime_path == "/pty":  # a terminal: recorded while its session's recording is on
        recorder = recording.attach(session.id, query, blocking)
        runtime.tap, client.tap = recorder.from_runtime, recorder.from_client
    upgraded = False
    pings: _Pings | None = None
    request[RELAYED] = True  # the server stopping closes it through `client`, not aiohttp
    try:
        await ws.prepare(request)
        upgraded = True
        audited(request, who, "relay.connect", session.id, "ok")
        connection.divert(client)
        client.join(runtime)
        runtime.join(client)
        if connection.limits.ws_ping > 0:  # 0: never
            pings = _Pings(client, runtime, connection.limits.ws_ping)
        await _until_done(client, runtime, who, session.id, route.source)
    finally:
        if pings is not None:
            pings.stop()
        runtime.close()
        client.close()
        if recorder is not None:
            recorder.close()
        if upgraded:  # the bytes passed untouched: what closed it is not known here
            audited(request, who, "relay.disconnect", session.id, "closed")
        # Gone, so nothing aiohttp writes as the handler ends goes out (bounded: a connection
        # lost before it was diverted never tells the client side).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(client.lost), CLOSE_GRACE)
    return ws


def refused(
    request: web.Request, who: Principal | None, target: str, answer: web.Response
) -> web.Response:
    """`answer`, a refused connection, recorded in the audit log."""
    audited(request, who, "relay.connect", target, "refused")
    return answer


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def _runtime_refused(status: int) -> _Refused:
    if status == 404:
        return _Refused(404, "This session has no desktop")
    return _Refused(502, f"The workspace runtime answered {status}")


class _Side(Splice):
    """One side of a relay: what it receives is written to its peer, and a side whose peer's
    buffer is full stops being read until it drains. Until it is joined, what it receives
    is kept: the runtime's handshake answer, and what came after it.

    A side whose `frames` are counted (the runtime's, of a relayed WebSocket) can have frames
    of the relay's own sent to its peer between two of them (`say`)."""

    # Counts the bytes this side receives (`metrics.relay_bytes`), if metrics are on.
    count: Callable[[float], None] | None = None
    # Gets a copy of what this side receives, once it has gone on (a terminal's recorder).
    tap: Callable[[bytes], None] | None = None
    # The frames this side receives, counted as they pass (None: not a WebSocket's, or not
    # needed: the relay says nothing of its own that way).
    frames: _Frames | None = None

    def __init__(self, transport: asyncio.BaseTransport | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.transport = transport
        self.peer: _Side | None = None
        self.kept = bytearray()
        self.ended = False  # the far end has sent all it will
        self.head: asyncio.Future[bytes] = loop.create_future()  # the runtime's answer
        self.lost: asyncio.Future[None] = loop.create_future()
        self.heard = loop.time()  # when this side last received anything
        self.held = False  # not read, its peer's buffer being full
        self.own: list[bytes] = []  # the relay's frames, for the peer at the next boundary
        self.last = False  # `own` ends with a close: nothing of this side's goes on after it
        self.muted = False  # that close has gone: what this side receives is dropped
        self.going = False  # told that the server is stopping
        self._abort: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.heard = self.loop.time()
        if self.peer is not None:
            if self.count is not None:
                self.count(len(data))
            if self.frames is None:
                self.peer.write(data)
            elif self.own or self.muted:
                self._between_frames(data)
            else:
                self.frames.feed(data)
                self.peer.write(data)
            if self.tap is not None:
                self.tap(data)
            return
        self.kept += data
        if self.head.done():
            return
        end = self.kept.find(b"\r\n\r\n")
        if end >= 0:
            self.head.set_result(bytes(self.kept[: end + 4]))
            del self.kept[: end + 4]
        elif len(self.kept) > MAX_HEAD:
            self.head.set_exception(ConnectionError("the runtime's answer is too long"))
            self.close()

    def join(self, peer: _Side) -> None:
        self.peer = peer
        if self.kept:
            if self.frames is not None:
                self.frames.feed(self.kept)
            peer.write(bytes(self.kept))
            if self.tap is not None:
                self.tap(bytes(self.kept))
            self.kept.clear()

    def write(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write(data)

    # -- the relay's own frames ---------------------------------------------------------------

    def say(self, frame: bytes, last: bool = False) -> None:
        """Sends the peer `frame`, once the frame of this side's under way has gone on (at
        once when none is); `last`: a close, after which nothing of this side's goes on."""
        peer = self.peer
        if self.frames is None or peer is None or self.last or self.ended or peer.lost.done():
            return
        self.own.append(frame)
        self.last = last
        if self.frames.between:
            self._say_own()

    def _between_frames(self, data: bytes) -> None:
        """Passes `data` on with the relay's frames put in where the frame under way ends."""
        assert self.peer is not None and self.frames is not None
        if self.muted:
            return
        end = self.frames.feed(data, stop=True)
        if end:
            self.peer.write(data[:end])
        if not self.frames.between:
            return  # that frame goes on in what comes next
        self._say_own()
        if end < len(data) and not self.muted:
            self.frames.feed(data[end:])
            self.peer.write(data[end:])

    def _say_own(self) -> None:
        assert self.peer is not None
        for frame in self.own:
            self.peer.write(frame)
        self.own.clear()
        self.muted = self.last

    def going_away(self) -> None:
        """The server is stopping (`Splice`): the client gets a close (1001, going away) between
        two of the runtime's frames; its answer goes on to the runtime, which closes the
        stream, and with it both legs. Both are cut if that takes over `GOING_AWAY_GRACE`."""
        if self.going:
            return
        self.going = True
        if self.peer is not None:
            self.peer.say(GOING_AWAY, last=True)
        self.loop.call_later(GOING_AWAY_GRACE, self.cut)

    def cut(self) -> None:
        """Ends both legs at once, whatever they still hold."""
        self.abort()
        if self.peer is not None:
            self.peer.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def eof_received(self) -> bool:
        """The far end is done sending: so is this relay, towards the peer (which may still
        answer, say the close frame just passed on). Both done: both close."""
        self.ended = True
        peer = self.peer.transport if self.peer is not None else None
        if self.peer is None or self.peer.ended or not isinstance(peer, asyncio.WriteTransport):
            return False  # the transport closes, and connection_lost closes the peer
        if not peer.can_write_eof():
            return False
        peer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort is not None:
            self._abort.cancel()
        if not self.head.done():
            if self.peer is None:  # the runtime's answer is awaited
                self.head.set_exception(ConnectionError("the runtime closed the connection"))
            else:  # joined: nobody waits for it
                self.head.cancel()
        if not self.lost.done():
            self.lost.set_result(None)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None and isinstance(self.peer.transport, asyncio.ReadTransport):
            self.peer.transport.pause_reading()
            self.peer.held = True

    def resume_writing(self) -> None:
        if self.peer is not None and isinstance(self.peer.transport, asyncio.ReadTransport):
            self.peer.held = False
            self.peer.transport.resume_reading()

    def close(self) -> None:
        """Closes once what is buffered for the far end has gone, which a far end that stopped
        reading never takes: then it is aborted after `CLOSE_GRACE`."""
        transport = self.transport
        if transport is None or self.lost.done():
            return
        transport.close()
        buffered = isinstance(transport, asyncio.WriteTransport) and (
            transport.get_write_buffer_size()
        )
        if buffered and self._abort is None:
            self._abort = self.loop.call_later(CLOSE_GRACE, self.abort)

    def abort(self) -> None:
        if isinstance(self.transport, asyncio.WriteTransport) and not self.lost.done():
            self.transport.abort()


class _Frames:
    """Where the WebSocket frames passing one way begin and end, read from their headers
    (RFC 6455 5.2: two bytes, the payload's length in 7, 16 or 64 bits, a mask key) and never
    their payloads, so that a frame of the relay's own can go between two of them."""

    __slots__ = ("head", "left")

    def __init__(self) -> None:
        self.left = 0  # bytes of the payload under way still to pass
        self.head = b""  # the part of a header that has passed

    @property
    def between(self) -> bool:
        """Whether what has passed ends with a whole frame."""
        return not self.left and not self.head

    def feed(self, data: bytes | bytearray, stop: bool = False) -> int:
        """Counts `data` as passed; `stop`: only up to the first boundary. Returns how many
        bytes of it were counted."""
        at, size = 0, len(data)
        while at < size:
            if self.left:
                step = min(self.left, size - at)
                self.left -= step
                at += step
                if stop and not self.left:
                    return at
                continue
            if stop and not self.head:
                return at
            known = len(self.head)
            head = self.head + bytes(data[at : at + 14 - known])  # 14: the longest header
            parsed = _header(head)
            if parsed is None:  # the rest of the header comes later
                self.head = head
                return size
            length, self.left = parsed
            self.head = b""
            at += length - known
            if stop and not self.left:
                return at
        return at


def _header(head: bytes) -> tuple[int, int] | None:
    """The length of the header `head` begins with and of its frame's payload, if `head`
    holds the whole header."""
    if len(head) < 2:
        return None
    size, extra = head[1] & 0x7F, 0
    if size == 126:
        extra = 2
    elif size == 127:
        extra = 8
    length = 2 + extra + (4 if head[1] & 0x80 else 0)
    if len(head) < length:
        return None
    if extra:
        size = int.from_bytes(head[2 : 2 + extra], "big")
    return length, size


class _Pings:
    """Pings a relayed stream's client (between the runtime's frames) once it has sent nothing
    for `interval` seconds, and frees both legs when it sends nothing within half that again:
    a client that stopped (suspended, frozen, gone without a word, its buffers full) holds a
    leg of the relay and one of the runtime for at most `interval` and half as long again.
    Its pong goes on to the runtime, which takes an unasked one as WebSocket allows."""

    def __init__(self, client: _Side, runtime: _Side, interval: float) -> None:
        self.client, self.runtime = client, runtime
        self.interval, self.timeout = interval, interval / 2
        self.loop = client.loop
        self.pinged = 0.0
        self.timer = self.loop.call_later(interval, self._check)

    def _check(self) -> None:
        silent = self.loop.time() - self.client.heard
        if silent < self.interval or self.client.held:  # heard from (or not read: alive)
            self.timer = self.loop.call_later(max(0.0, self.interval - silent), self._check)
            return
        self.pinged = self.loop.time()
        self.runtime.say(PING)
        self.timer = self.loop.call_later(self.timeout, self._answered)

    def _answered(self) -> None:
        if self.client.heard >= self.pinged or self.client.held:
            self._check()
            return
        log.info("a relayed stream's client did not answer a ping within %.1fs: closed",
                 self.timeout)  # fmt: skip
        self.client.abort()  # it takes nothing more: what the relay holds for it goes
        self.runtime.close()

    def stop(self) -> None:
        self.timer.cancel()


@dataclass(frozen=True)
class RuntimeAddress:
    """Where a session's runtime answers: a WebSocket URI for `path`, the headers it wants,
    and, for a local workspace, its Unix socket (a path the workspace may write: connect to
    it with `connect_unix`, which follows no links)."""

    uri: str
    headers: dict[str, str]
    unix: str | None = None


async def runtime_address(session: Session, path: str) -> RuntimeAddress:
    """Every runtime gets its session's token (one given none, as on Cloud Run, ignores it);
    one behind Google's front end (https: a private Cloud Run service) an ID token too, as
    its audience. A GKE runtime has no such front end: its token is what admits the relay."""
    url = session.url or ""
    headers = {auth.HEADER: await blocking(access.runtime_token, session.id)}
    if url.startswith("http+unix://"):  # local: the runtime's Unix socket
        unix = unquote(url[len("http+unix://") :])
        return RuntimeAddress("ws://runtime" + path, headers, unix)
    # A Cloud Run or GKE workspace.
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    uri = f"{'wss' if tls else 'ws'}://{parts.netloc}{parts.path.rstrip('/')}{path}"
    if tls:
        id_token = await blocking(access.id_tokens(), url.rstrip("/"))
        if id_token:
            headers["Authorization"] = f"Bearer {id_token}"
    return RuntimeAddress(uri, headers)


async def _open_runtime(
    session: Session, path: str, protocols: tuple[str, ...]
) -> tuple[_Side, ClientProtocol]:
    """A connection to the runtime's WebSocket at `path`, its handshake done and checked, and
    the protocol that made it (open: it can read what the runtime sends next)."""
    loop = asyncio.get_running_loop()
    side = _Side()
    try:
        address = await runtime_address(session, path)
        if address.unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
            try:
                await blocking(connect_unix, sock, address.unix)
                await loop.create_unix_connection(lambda: side, sock=sock)
            except OSError:
                sock.close()
                raise
        else:
            parts = urlsplit(address.uri)
            tls = parts.scheme == "wss"
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: side,
                    parts.hostname or "",
                    parts.port or (443 if tls else 80),
                    ssl=ssl.create_default_context() if tls else None,
                ),
                10,
            )
            if side.transport is not None:
                _keep_alive(side.transport.get_extra_info("socket"))
        uri, headers = address.uri, address.headers
        handshake = ClientProtocol(
            parse_uri(uri), subprotocols=[Subprotocol(p) for p in protocols] or None
        )
        request = handshake.connect()
        for name, value in headers.items():
            request.headers[name] = value
        handshake.send_request(request)
        side.write(b"".join(handshake.data_to_send()))
        head = await asyncio.wait_for(asyncio.shield(side.head), 10)
        handshake.receive_data(head)
        upgraded = handshake.events_received()
        if handshake.handshake_exc is not None:
            raise handshake.handshake_exc
        if not upgraded:
            # A 101 ends at its head; any other answer (a 401, say) has a body, which the
            # parser waits for and the refusal does not need: its status line says it.
            side.close()
            raise _runtime_refused(int(head.split(b" ", 2)[1]))
    except TetherError as exc:  # no ID token to call the workspace with
        side.close()
        raise _Refused(502, exc.message) from None
    except InvalidStatus as exc:
        side.close()
        raise _runtime_refused(exc.response.status_code) from None
    except (ValueError, IndexError):  # a status line that is not HTTP's
        side.close()
        raise _Refused(502, "The workspace runtime answered nonsense") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        side.close()
        raise _Refused(502, f"Workspace runtime unreachable: {exc}") from None
    return side, handshake


def _keep_alive(sock: socket.socket) -> None:
    """A peer that vanishes (no FIN) is noticed within about a minute and frees both sides."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


MAX_TAIL = 10_000  # lines a followed log starts with, at most (as the JSON read)
BACKLOG = 1024  # lines queued for a slow HTTP client before the runtime stops being read
GONE_POLL = 1.0  # seconds between looks at whether an HTTP client is still connected
_END_REASONS = {"ended": "session ended", "revoked": "access revoked",
                "stopping": "server stopping"}  # fmt: skip


async def follow_lines(request: web.Request, route: Route) -> web.StreamResponse:
    """A live log followed over plain HTTP: the runtime's stream (the same one a WebSocket gets)
    read here, and each line sent as a Server-Sent Event when the client accepts
    text/event-stream, else as a line of chunked text/plain. It ends as the WebSocket does:
    the session ending (its runtime closes the stream, or `CLOSE_GRACE` after the store says
    so), the caller's access revoked (at once), or the client leaving. Refusals come before
    the answer starts, in the route's error shape."""
    try:
        tail = int(request.query.get("tail", "100"))
    except ValueError:
        tail = 0
    if not 1 <= tail <= MAX_TAIL:
        return route.refusal(400, f"Invalid query field 'tail': an integer from 1 to {MAX_TAIL}",
                             "INVALID_PARAMETER")  # fmt: skip
    stamped = request.query.get("timestamps", "true").lower() not in ("false", "0", "no", "off")
    allowed = await admit(request, route)
    if isinstance(allowed, web.Response):
        return allowed
    who, session = allowed
    try:
        runtime, protocol = await _open_runtime(session, f"{route.runtime_path}?tail={tail}", ())
    except _Refused as refused:
        return route.refusal(refused.status, refused.detail)
    runtime.count = metrics.relay_bytes("to_client")
    sse = "text/event-stream" in request.headers.get("Accept", "").lower()
    lines = _Lines(runtime, protocol)
    response = web.StreamResponse(headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.content_type = "text/event-stream" if sse else "text/plain"
    response.charset = "utf-8"

    def ending(done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            lines.must_end(done.result() or "client gone")

    watch = asyncio.ensure_future(until_it_must_end(who, session.id, "api"))
    gone = asyncio.ensure_future(until_gone(request))
    stopping = asyncio.ensure_future(until_stopping(request))
    for watcher in (watch, gone, stopping):
        watcher.add_done_callback(ending)
    try:
        runtime.join(lines)
        if runtime.lost.done():  # closed before it was joined: nothing will come
            lines.close()
        await response.prepare(request)
        while (line := await lines.next()) is not None:
            if not stamped:
                line = line.split(" ", 1)[-1]
            await response.write(_event(line) if sse else line.encode() + b"\n")
        if sse:  # so that an EventSource can close instead of connecting again
            await response.write(_event(lines.reason or "stream ended", "end"))
        await response.write_eof()
    except ConnectionError:  # the client left
        pass
    finally:
        watch.cancel()
        gone.cancel()
        stopping.cancel()
        runtime.close()
    return response


def _event(data: str, kind: str | None = None) -> bytes:
    """One Server-Sent Event (a line break inside is a data line of its own)."""
    head = f"event: {kind}\n" if kind else ""
    return (head + "".join(f"data: {part}\n" for part in _BREAKS.split(data)) + "\n").encode()


_BREAKS = re.compile(r"\r\n|\r|\n")  # what ends a line in an event stream


async def until_stopping(request: web.Request) -> str:
    """Until the server stops (`tether.origin.server`): a followed log then ends at once, its
    answer whole (an SSE client gets the `end` event)."""
    await request.app[CONNECTIONS].stopping.wait()
    return "stopping"


async def until_gone(request: web.Request) -> None:
    """Until the HTTP client has disconnected (aiohttp does not cancel the handler then)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(GONE_POLL)


class _Lines(_Side):
    """The reading end of a followed log: joined to the runtime's side as its peer, it takes
    what the runtime sends, has it parsed by the WebSocket protocol that made the handshake
    (websockets': it answers pings and the close too), and queues each text message as a line.
    A backlog stops the runtime being read until the HTTP client catches up."""

    def __init__(self, runtime: _Side, protocol: ClientProtocol) -> None:
        super().__init__()
        self.runtime, self.protocol = runtime, protocol
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.parts: list[bytes] = []  # of a message sent in fragments
        self.reason: str | None = None  # why the stream ended, once it has

    def write(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            if not isinstance(frame, Frame) or self.reason is not None:
                continue
            if frame.opcode in (Opcode.TEXT, Opcode.CONT):
                self.parts.append(bytes(frame.data))
                if frame.fin:
                    self.queue.put_nowait(b"".join(self.parts).decode(errors="replace"))
                    self.parts.clear()
        for out in self.protocol.data_to_send():  # a pong, the close frame's answer
            if out:
                self.runtime.write(out)
        if self.protocol.state is not State.OPEN:  # the runtime closed the stream
            self.close()
        elif self.queue.qsize() > BACKLOG:
            self._reading(False)

    async def next(self) -> str | None:
        """The next line; None once the stream is over."""
        line = await self.queue.get()
        if self.queue.qsize() < BACKLOG // 2:
            self._reading(True)
        return line

    def must_end(self, why: str) -> None:
        """Ends the stream: at once if access was revoked or the client left; after the lines
        the runtime still sends within `CLOSE_GRACE` if the session ended."""
        if self.reason is not None:
            return
        if why == "ended":
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self.close, _END_REASONS[why])
            return
        while not self.queue.empty():  # nothing more goes out
            self.queue.get_nowait()
        self.close(_END_REASONS.get(why, why))

    def close(self, reason: str = "session ended") -> None:
        if self.reason is None:
            self.reason = reason
            self.queue.put_nowait(None)

    def _reading(self, on: bool) -> None:
        transport = self.runtime.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()


async def _until_done(
    client: _Side, runtime: _Side, who: Principal, session_id: str, source: ActivitySource
) -> None:
    """Until both sides have closed, the caller's access is revoked (cut at once), or the
    session has ended (its runtime has `CLOSE_GRACE` to close the stream itself)."""
    both: asyncio.Future[Any] = asyncio.gather(client.lost, runtime.lost)
    watch: asyncio.Future[str] = asyncio.ensure_future(until_it_must_end(who, session_id, source))
    try:
        await asyncio.wait([both, watch], return_when=asyncio.FIRST_COMPLETED)
        if not both.done() and watch.result() == "ended":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(both), CLOSE_GRACE)
    finally:
        watch.cancel()


async def until_it_must_end(
    who: Principal, session_id: str, source: ActivitySource = "terminal"
) -> str:
    """Returns why the connection must end, once it must (`access.standing`); until then, it
    counts as the session's activity of `source`."""
    while True:
        await asyncio.sleep(access.WATCH_INTERVAL)
        try:
            if reason := await blocking(access.standing, who, session_id, source):
                return reason
        except TetherError:
            continue  # the store is out of reach: keep the relay, look again later
