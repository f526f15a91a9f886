"""The origin's HTTP server: a thread per connection.

A plain request is read (httptools parses it), run and answered on its connection's own
thread: on this kind of machine a hop from an event loop to a worker thread and back costs more
than the parse, and an exec waits on its thread anyway. A terminal, desktop or live-log
WebSocket is relayed from that thread too (`tether.relay.streams`). The shell WebSocket, or a
path no function target serves (the viewer page, noVNC's files), is handed untouched to the
relay's aiohttp app on the event loop: the thread only peeks at the request head to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import httptools
from aiohttp import web

from tether import deferred
from tether.origin.apps import relay_app, wsgi_app
from tether.relay import streams
from tether.settings import Settings
from tether.surfaces.http import closing_json_response
from tether.targets import target_for

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

MAX_HEAD = 64 << 10  # bytes of request line and headers
MAX_BODY = 32 << 20  # as Cloud Functions allows
KEEP_ALIVE = 75.0  # seconds an idle connection stays open (aiohttp's default)


class Origin:
    """Serves the function targets (`app`, WSGI) and the relay on one listening socket."""

    def __init__(
        self,
        app: WsgiApp = wsgi_app,
        relay: web.Application | None = None,
        max_connections: int = Settings.max_connections,
    ) -> None:
        """`max_connections` are served at once (each holds a thread); more get a 503."""
        self.app = app
        self.runner = web.AppRunner(relay or relay_app(), access_log=None, handle_signals=False)
        self.port = 0
        self._accepting: asyncio.Task[None] | None = None
        self._slots = threading.BoundedSemaphore(max_connections)

    async def start(self, host: str, port: int) -> None:
        """Listens on `port` (0: any free one; `self.port` says which)."""
        await self.runner.setup()
        listener = socket.create_server((host, port), backlog=128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(listener))

    async def serve(self, host: str, port: int, ready: Callable[[], None] = lambda: None) -> None:
        """Serves until SIGINT or SIGTERM; `ready` is called once listening."""
        await self.start(host, port)
        try:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            ready()
            await stop.wait()
        finally:
            await self.close()

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
                if not self._slots.acquire(blocking=False):
                    with contextlib.suppress(OSError), sock:
                        sock.setblocking(True)
                        busy = {"detail": "Too many connections; try again shortly"}
                        sock.sendall(closing_json_response(503, busy))
                    continue
                threading.Thread(
                    target=self._connection, args=(sock, loop), name="http", daemon=True
                ).start()

    def _connection(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._serve_connection(sock, loop)
        finally:
            self._slots.release()

    def _serve_connection(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(KEEP_ALIVE)
        try:
            for_relay = not _Connection(sock, self.app).serve()
        except OSError:  # gone, or idle for too long
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


class _Head:
    """What `_peeked` keeps of a request head (the parser calls these)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")


def _peeked(head: bytes) -> tuple[str | None, streams.Upgrade | None]:
    """The path a request head asks for (None if it cannot be read: the parser will answer
    it), and the WebSocket upgrade it makes, if any."""
    if b"upgrade" not in head.lower():  # most requests: the request line says all we need
        line = head.partition(b"\r\n")[0].split(b" ")
        if len(line) == 3 and line[1].startswith(b"/"):
            return unquote_to_bytes(line[1].partition(b"?")[0]).decode("utf-8", "replace"), None
    fields = _Head()
    upgrade = False
    try:
        httptools.HttpRequestParser(fields).feed_data(head)
    except httptools.HttpParserUpgrade:
        upgrade = fields.headers.get("upgrade", "").lower() == "websocket"
    except httptools.HttpParserError:
        return None, None
    if not fields.url:
        return None, None
    url = httptools.parse_url(fields.url)
    path = unquote_to_bytes(url.path).decode("utf-8", "replace")
    if not upgrade:
        return path, None
    query = dict(parse_qsl((url.query or b"").decode("latin-1")))
    return path, streams.Upgrade(path, query, fields.headers)


class _TooLarge(Exception):
    pass


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.method = b"GET"
        self.version = "1.1"
        self.keep_alive = True


class _Connection:
    """Requests on one connection, in order; the parser calls the `on_*` methods."""

    def __init__(self, sock: socket.socket, app: WsgiApp) -> None:
        self.sock = sock
        self.app = app
        self.local = sock.getsockname()
        self.peer = sock.getpeername()
        self.parser = httptools.HttpRequestParser(self)
        self.reading: _Request | None = None
        self.ready: deque[_Request] = deque()

    def serve(self) -> bool:
        """Requests until the connection ends (True) or one is for the relay (False)."""
        while True:
            if self.reading is None and not self.ready:  # nothing of the next request read yet
                head = _peek_head(self.sock)
                if not head:
                    return True
                path, upgrade = _peeked(head)
                if upgrade is not None:
                    found = upgrade.route()
                    if found is None:
                        return False  # the shell: the relay's aiohttp app
                    self.sock.recv(head.index(b"\r\n\r\n") + 4, socket.MSG_WAITALL)
                    streams.serve(self.sock, upgrade, *found)
                    return True
                if path is not None and target_for(path) is None:
                    return False  # a page, a file or nothing: the relay's aiohttp app
            try:
                while not self.ready:
                    data = self.sock.recv(65536)
                    if not data:
                        return True
                    self.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                too_large = isinstance(exc.__context__, _TooLarge)
                self._refuse(*((413, "request body too large") if too_large else (400, str(exc))))
                return True
            except httptools.HttpParserUpgrade:  # to something else (h2c, say): answer in 1.1
                if not self.ready:
                    self._refuse(400, "an unreadable upgrade request")
                    return True
                self.ready[-1].keep_alive = False  # what follows it is not HTTP/1.1
            except httptools.HttpParserError as exc:
                self._refuse(400, str(exc) or "malformed request")
                return True
            request = self.ready.popleft()
            self._respond(request)
            if not request.keep_alive:
                return True

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reading = _Request()

    def on_url(self, url: bytes) -> None:
        assert self.reading is not None
        self.reading.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.reading is not None
        self.reading.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.reading
        assert request is not None
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        fields = {name.lower(): value for name, value in request.headers}
        if int(fields.get(b"content-length", b"0") or 0) > MAX_BODY:
            raise _TooLarge
        if fields.get(b"expect", b"").lower() == b"100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        assert self.reading is not None
        self.reading.body += body
        if len(self.reading.body) > MAX_BODY:
            raise _TooLarge

    def on_message_complete(self) -> None:
        assert self.reading is not None
        self.ready.append(self.reading)
        self.reading = None

    # -- answering ----------------------------------------------------------------------------

    def _respond(self, request: _Request) -> None:
        # Work a handler deferred (`tether.deferred.later`) runs once the answer is sent.
        with deferred.scope():
            self._answer(request)

    def _answer(self, request: _Request) -> None:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; our targets never use it

        try:
            chunks = self.app(self._environ(request), start_response)
        except Exception:
            log.exception("unhandled error in a function target")
            self._refuse(500, "internal error")
            request.keep_alive = False
            return
        try:
            status, headers = started
            no_body = request.method == b"HEAD" or status[:3] in ("204", "304")
            sized = no_body or any(name.lower() == "content-length" for name, _ in headers)
            chunked = not sized and request.version == "1.1"
            request.keep_alive = request.keep_alive and (sized or chunked)
            lines = [f"HTTP/1.1 {status}\r\n", *(f"{k}: {v}\r\n" for k, v in headers)]
            if chunked:
                lines.append("Transfer-Encoding: chunked\r\n")
            if not request.keep_alive:
                lines.append("Connection: close\r\n")
            # The head goes out with the first chunk: each write wakes the client, which would
            # read the head and wait again for the body.
            out = "".join(lines).encode("latin-1") + b"\r\n"
            for chunk in () if no_body else chunks:
                if chunk:
                    out += b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
                    self.sock.sendall(out)
                    out = b""
            if out := out + (b"0\r\n\r\n" if chunked else b""):
                self.sock.sendall(out)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _environ(self, request: _Request) -> dict[str, Any]:
        path, _, query = request.url.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "REQUEST_URI": request.url.decode("latin-1"),
            "SERVER_NAME": self.local[0],
            "SERVER_PORT": str(self.local[1]),
            "SERVER_PROTOCOL": "HTTP/" + request.version,
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "CONTENT_LENGTH": str(len(request.body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": BytesIO(request.body),
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
        self.sock.sendall(closing_json_response(status, {"detail": reason}))
