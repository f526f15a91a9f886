"""Byte relays: a session's terminal, desktop (VNC) and live logs, each a WebSocket between the
client and the session's runtime.

After both handshakes the bytes pass through untouched (client frames stay masked, as the
runtime expects of a client): each direction copies what one socket receives to the other
through one fixed buffer, so a slow reader slows the runtime instead of growing memory, and a
frame costs a few system calls rather than a parse and a re-mask in Python. (`os.splice`
through a pipe was tried: it saved the relay little, made each byte dearer for the client to
receive, and downloads ran at about 0.65x a copy's speed.) Pings and close frames pass through
too: the runtime pings the client through the relay, and closes its streams (4001) when the
session ends. A relay runs on its connection's thread, plus one thread for the
client-to-runtime direction and one that watches the session.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode, urlsplit

from tether.core.models import Session
from tether.errors import TetherError
from tether.provision.uds import connect_unix
from tether.relay import access
from tether.runtime import auth
from tether.runtime.websockets import UNIX_SEND_BUFFER
from tether.surfaces.http import closing_json_response, status_for

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, for Sec-WebSocket-Accept
_BUFFER = 256 << 10  # per direction: larger moved no more bytes per second
_MAX_HEAD = 64 << 10
CLOSE_GRACE = 5.0  # seconds an ended session's runtime has to close its streams itself


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    runtime_path: str
    query: dict[str, str | None] = field(default_factory=dict)  # passed on; None: if given
    protocols: tuple[str, ...] = ()  # subprotocols offered to the runtime and accepted
    desktop: bool = False  # the session must have one
    follow_only: bool = False  # only with `?follow=true`: the plain request is a function's


ROUTES = (
    Route(re.compile(r"/v1/sessions/([^/]+)/terminal"), "/pty", {"cols": None, "rows": None}),
    Route(re.compile(r"/vnc-viewer/([^/]+)"), "/vnc", protocols=("binary",), desktop=True),
    Route(re.compile(r"/api/v1/sessions/([^/]+)/logs"), "/logs/follow", {"tail": "100"}, (),
          follow_only=True),
)  # fmt: skip


@dataclass
class Upgrade:
    """A WebSocket upgrade request as the origin read it (header names in lower case)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]

    def route(self) -> tuple[Route, str] | None:
        """The byte relay this request is for, and its session id; None if it is none's."""
        follow = self.query.get("follow", "").lower() in ("true", "1")
        for route in ROUTES:
            found = route.pattern.fullmatch(self.path)
            if found and (follow or not route.follow_only):
                return route, found.group(1)
        return None


def serve(client: socket.socket, upgrade: Upgrade, route: Route, session_id: str) -> None:
    """Answers the upgrade (or refuses it, before anything is relayed), then relays until
    either side ends or the session does. Runs on the client connection's thread."""
    headers = upgrade.headers
    key = headers.get("sec-websocket-key")
    if not key or headers.get("sec-websocket-version") != "13":
        return _refuse(client, 400, "A WebSocket upgrade needs Sec-WebSocket-Key, version 13")
    if not access.same_origin(headers.get("origin"), headers.get("host")):
        return _refuse(client, 403, "Cross-origin WebSocket refused")
    try:
        _, session = access.authorize(
            session_id, upgrade.query, headers.get("authorization"), headers.get("x-api-key")
        )
    except TetherError as exc:
        return _refuse(client, status_for(exc), exc.message, exc.details.get("code"))
    if route.desktop and not session.vnc:
        return _refuse(client, 404, "This session has no desktop")
    offered = {p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")}
    protocol = next((p for p in route.protocols if p in offered), None)
    query = {k: upgrade.query.get(k, default) for k, default in route.query.items()}
    path = route.runtime_path + "?" + urlencode({k: v for k, v in query.items() if v is not None})
    try:
        runtime, early = _open_runtime(session, path.rstrip("?"), route.protocols)
    except _Refused as refused:
        return _refuse(client, refused.status, refused.detail)
    head = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {_accept(key)}",
        *([f"Sec-WebSocket-Protocol: {protocol}"] if protocol else []),
    ]
    try:
        client.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    except OSError:
        runtime.close()
        return
    _Relay(client, runtime, early, session.id).run()


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def _refuse(sock: socket.socket, status: int, detail: str, code: str | None = None) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(closing_json_response(status, {"detail": detail, "code": code}))


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _open_runtime(
    session: Session, path: str, protocols: tuple[str, ...]
) -> tuple[socket.socket, bytes]:
    """The runtime's WebSocket at `path`, handshake done: the socket, and whatever came after
    the runtime's answer in the same read."""
    url = session.url or ""
    headers = {}
    sock: socket.socket | None = None
    try:
        if url.startswith("http+unix://"):  # local: the runtime's Unix socket
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
            connect_unix(sock, unquote(url[len("http+unix://") :]))
            host = "runtime"
            headers[auth.HEADER] = access.runtime_token(session.id)
        else:  # a Cloud Run or GKE workspace
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            host = parts.netloc
            sock = socket.create_connection(
                (parts.hostname or "", parts.port or (443 if tls else 80)), timeout=10
            )
            _keep_alive(sock)
            path = parts.path.rstrip("/") + path
            if tls:  # a private Cloud Run service: it wants an ID token
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=parts.hostname)
                token = access.id_tokens()(url.rstrip("/"))
                if token:
                    headers["Authorization"] = f"Bearer {token}"
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *([f"Sec-WebSocket-Protocol: {', '.join(protocols)}"] if protocols else []),
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk or len(answer) > _MAX_HEAD:
                raise ConnectionError("the runtime closed the connection during the handshake")
            answer += chunk
    except (TetherError, OSError) as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, TetherError):  # no ID token to call the workspace with
            raise _Refused(502, exc.message) from None
        raise _Refused(502, f"Workspace runtime unreachable: {exc}") from None
    head, _, early = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    code = status.split(" ")[1:2]
    if code != ["101"] or _accept(key).encode() not in head:
        sock.close()
        if code == ["404"]:
            raise _Refused(404, "This session has no desktop")
        raise _Refused(502, f"The workspace runtime answered {status!r}")
    sock.settimeout(None)
    return sock, early


def _keep_alive(sock: socket.socket) -> None:
    """A peer that vanishes (no FIN) is noticed within about a minute and frees both legs."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


class _Stream:
    """Moves everything one socket receives on to another."""

    def __init__(self, src: socket.socket, dst: socket.socket, early: bytes = b"") -> None:
        self.src, self.dst = src, dst
        self.early = early  # read already, with the handshake: goes first

    def run(self) -> None:
        """Until the source ends, or either socket fails."""
        try:
            if self.early:
                self.dst.sendall(self.early)
            buffer = memoryview(bytearray(_BUFFER))
            while moved := self.src.recv_into(buffer):
                self.dst.sendall(buffer[:moved])
        except OSError:
            pass  # either side went away


class _Relay:
    def __init__(
        self, client: socket.socket, runtime: socket.socket, early: bytes, session_id: str
    ) -> None:
        self.client, self.runtime, self.session_id = client, runtime, session_id
        self.down = _Stream(runtime, client, early)
        self.up = _Stream(client, runtime)
        self.done = threading.Event()

    def run(self) -> None:
        self.client.settimeout(None)
        with contextlib.suppress(OSError):
            _keep_alive(self.client)
        up = threading.Thread(target=self._up, name="relay-up", daemon=True)
        up.start()
        threading.Thread(target=self._watch, name="relay-watch", daemon=True).start()
        try:
            self.down.run()  # until the runtime ends the stream, its close frame gone through
            up.join(timeout=2)  # the client answers that frame, then closes its side
        finally:
            self.done.set()
            _shutdown(self.client, socket.SHUT_RDWR)
            _shutdown(self.runtime, socket.SHUT_RDWR)
            up.join()
            self.runtime.close()

    def _up(self) -> None:
        self.up.run()
        _shutdown(self.runtime, socket.SHUT_WR)  # the client is done: the runtime sees the end

    def _watch(self) -> None:
        """A session that ends (terminated, hibernated, expired) closes its relays. Its runtime,
        as it stops, closes its WebSockets itself (close code 4001, passed through); a relay
        whose runtime has not done so after `CLOSE_GRACE` is cut."""
        while not self.done.wait(access.WATCH_INTERVAL):
            try:
                if access.still_running(self.session_id):
                    continue
            except TetherError:
                continue  # the store is out of reach: keep the relay, look again later
            if not self.done.wait(CLOSE_GRACE):
                _shutdown(self.client, socket.SHUT_RDWR)
                _shutdown(self.runtime, socket.SHUT_RDWR)
            return


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)
