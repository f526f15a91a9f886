"""The local origin's HTTP server: one port for the function targets and the relay.

A plain request is read, run and answered on its connection's own thread (h11 parses it). On
this kind of machine a hop from an event loop to a worker thread and back costs more than the
parse, and an exec waits on its thread anyway. A WebSocket upgrade, or a path no function
target serves (the viewer page, noVNC's files), is handed untouched to the relay's aiohttp app
on the event loop: the thread only peeks at the request head before deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from aiohttp import web

from tether.targets import target_for

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

MAX_HEAD = 64 << 10  # bytes of request line and headers
MAX_BODY = 32 << 20  # as Cloud Functions allows
KEEP_ALIVE = 75.0  # seconds an idle connection stays open (aiohttp's default)
_UPGRADE = re.compile(rb"\r\nupgrade:", re.IGNORECASE)


class Origin:
    """Serves `app` (WSGI) and `relay` (aiohttp) on one listening socket."""

    def __init__(self, app: WsgiApp, relay: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(relay, access_log=None, handle_signals=False)
        self._accepting: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        await self.runner.setup()
        listener = socket.create_server((host, port), backlog=128)
        listener.setblocking(False)
        self._accepting = asyncio.create_task(self._accept(listener))

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        await self.runner.cleanup()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with listener:
            while True:
                sock, _ = await loop.sock_accept(listener)
                threading.Thread(
                    target=self._connection, args=(sock, loop), name="http", daemon=True
                ).start()

    def _connection(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(KEEP_ALIVE)
        try:
            for_relay = not _Connection(sock, self.app).serve()
        except (OSError, h11.ProtocolError):  # gone, idle too long, or a response h11 refused
            for_relay = False
        if for_relay:  # the relay owns the socket from here
            server = self.runner.server
            assert server is not None
            handed = asyncio.run_coroutine_threadsafe(
                loop.connect_accepted_socket(server, sock), loop
            )
            handed.add_done_callback(lambda f: sock.close() if f.exception() else None)
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # let the client read our last answer, then close
        sock.close()


def _peek_head(sock: socket.socket) -> bytes:
    """The next request's head, left unread (b"" when the client has gone)."""
    deadline = time.monotonic() + 10
    while True:
        data = sock.recv(MAX_HEAD, socket.MSG_PEEK)
        if not data or b"\r\n\r\n" in data or len(data) >= MAX_HEAD:
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.001)  # the head came in pieces: let the rest arrive


def _for_relay(head: bytes) -> bool:
    """Whether the relay serves this request: an upgrade, or a path no target knows."""
    headers_end = head.find(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(request_line) != 3:
        return False  # h11 answers what it cannot parse
    path = request_line[1].split(b"?", 1)[0].decode("latin-1")
    if target_for(path) is None:
        return True
    return _UPGRADE.search(head, 0, headers_end if headers_end >= 0 else len(head)) is not None


class _Connection:
    def __init__(self, sock: socket.socket, app: WsgiApp) -> None:
        self.sock = sock
        self.app = app
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.local = sock.getsockname()
        self.peer = sock.getpeername()

    def serve(self) -> bool:
        """Requests until the connection ends (True) or one is for the relay (False)."""
        while True:
            if self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]:
                head = _peek_head(self.sock)
                if not head:
                    return True
                if _for_relay(head):
                    return False
            try:
                request = self._next()
                if request is None:
                    return True
                self._respond(request)
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, str(exc))
                return True
            if self.h11.our_state is h11.MUST_CLOSE:
                return True
            self.h11.start_next_cycle()

    def _event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                self._send(h11.InformationalResponse(status_code=100, headers=[]))
            self.h11.receive_data(self.sock.recv(65536))

    def _next(self) -> tuple[h11.Request, bytes] | None:
        event = self._event()
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed
        if int(dict(event.headers).get(b"content-length", 0)) > MAX_BODY:
            raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        body = bytearray()
        while isinstance(chunk := self._event(), h11.Data):
            body += chunk.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        return event, bytes(body)

    def _respond(self, request: tuple[h11.Request, bytes]) -> None:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; our targets never use it

        try:
            chunks = self.app(self._environ(*request), start_response)
        except Exception:
            log.exception("unhandled error in a function target")
            self._refuse(500, "internal error")
            return
        try:
            status, headers = started
            code, _, reason = status.partition(" ")
            self._send(h11.Response(status_code=int(code), headers=headers, reason=reason))
            for chunk in chunks:
                if chunk:
                    self._send(h11.Data(data=chunk))
            self._send(h11.EndOfMessage())
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _environ(self, request: h11.Request, body: bytes) -> dict[str, Any]:
        path, _, query = request.target.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "REQUEST_URI": request.target.decode("latin-1"),
            "SERVER_NAME": self.local[0],
            "SERVER_PORT": str(self.local[1]),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value.decode("latin-1")
            elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                key = "HTTP_" + key
                text = value.decode("latin-1")
                environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    def _refuse(self, status: int, reason: str) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is under way: all we can do is close
        body = json.dumps({"detail": reason}).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        phrase = HTTPStatus(status).phrase
        self._send(h11.Response(status_code=status, headers=headers, reason=phrase))
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.sock.sendall(data)
