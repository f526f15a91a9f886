"""The origin's HTTP server: aiohttp's, on one port, for the function targets and the relay.

aiohttp parses requests, frames answers, keeps connections alive and answers WebSocket
upgrades; `tether.origin.guard` adds the limits it lacks, in front of every connection, and the
app's middleware those of each request (`tether.origin.apps`). A plain request runs on a worker
thread (`tether.origin.wsgi`); WebSockets are served on the event loop.

On SIGTERM (Cloud Run's, 10 s before its SIGKILL) or SIGINT the origin drains (`Origin.drain`):
the listening socket closes (new connections are refused), idle connections close, every
WebSocket gets a close frame with 1001 (going away) and its relayed runtime leg is closed after
it, and the requests in flight have `DRAIN` seconds to finish, each answer closing its
connection. One still running then is answered 503 in its surface's error shape (if its answer
has not begun), and the process goes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, web

from tether import errors, logs
from tether.origin import guard
from tether.origin.apps import front_app, refusal, wsgi_app
from tether.origin.guard import RELAYED, Connections, Limits
from tether.origin.wsgi import WsgiApp
from tether.relay.streams import request_id
from tether.service import audit

log = logging.getLogger(__name__)


# aiohttp's protocol options. The guard bounds a head as a whole (431); aiohttp's own bounds on
# each line and the number of headers lie beyond it.
_OPTIONS: dict[str, Any] = {
    "access_log": None,
    "keepalive_timeout": guard.KEEP_ALIVE,
    "max_line_size": guard.MAX_HEAD + 1024,
    "max_field_size": guard.MAX_HEAD + 1024,
    "max_headers": guard.MAX_HEADERS + 10,
    # A refused body is read and dropped for this long before the connection closes (closing
    # with it unread would reset the connection, and the client could lose the answer).
    "lingering_time": 2.0,
}


DRAIN = 8.0  # seconds the requests in flight have to finish once the origin is told to stop
_LAST = 1.0  # seconds then for what was answered 503 or cut, and for aiohttp's own cleanup
_SWEEP = 0.05  # seconds between looks at what is still in flight while draining
_SOCKET: web.RequestKey[web.WebSocketResponse] = web.RequestKey("socket", web.WebSocketResponse)


class _Protocol(web.RequestHandler):
    """aiohttp's protocol, answering a request it cannot parse in JSON, as every error is."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer has begun: the connection is broken
            raise ConnectionError("an answer was under way")
        made = audit.request_id(request.headers.get(audit.HEADER))
        if status >= 500:
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc,
                      extra={"request_id": made})  # fmt: skip
            detail = "Internal server error"
        else:
            detail = (str(getattr(exc, "message", "") or message or "Bad request")).split("\n")[0]
            log.info("refused %s %s: %d %s", request.method, request.path, status, detail,
                     extra={"request_id": made})  # fmt: skip
        response = web.json_response({"detail": detail, "request_id": made}, status=status)
        response.headers[audit.HEADER] = made
        response.force_close()
        return response


class Origin:
    """Serves the function targets (`app`, WSGI) and the relay on one listening socket."""

    def __init__(
        self, app: WsgiApp = wsgi_app, limits: Limits | None = None, drain: float = DRAIN
    ) -> None:
        self.connections = Connections(limits or Limits())
        front = front_app(self.connections, app)
        front.middlewares.insert(0, self._in_flight())  # outermost: it sees each request end
        front.on_response_prepare.append(self._prepared)
        self.runner = web.AppRunner(front, handle_signals=False, shutdown_timeout=_LAST)
        self.port = 0
        self.drain_for = drain
        self._listener: asyncio.Server | None = None
        self._flight: dict[asyncio.Task[Any], web.Request] = {}  # requests being served
        self._stopping = False
        self._overdue: set[asyncio.Task[Any]] = set()  # cancelled at the drain's deadline

    async def start(self, host: str, port: int, shared: bool = False) -> None:
        """Listens on `port` (0: any free one; `self.port` says which); `shared`: with the
        other processes listening on it too, the kernel sharing connections out."""
        # The surfaces are imported here, once, not by the first requests' threads at once:
        # CPython 3.11 can fail building two modules' ASTs in two threads at the same time
        # ("AST constructor recursion depth mismatch"), and werkzeug builds its routes with ast.
        import tether.surfaces.onmemos
        import tether.surfaces.streamspace  # noqa: F401

        await self.runner.setup()
        server = self.runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self.connections.factory(lambda: _Protocol(server, loop=loop, **_OPTIONS)),
            host,
            port,
            backlog=1024,
            reuse_address=True,
            reuse_port=shared,
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def serve(
        self,
        host: str,
        port: int,
        ready: Callable[[], None] = lambda: None,
        shared: bool = False,
    ) -> None:
        """Serves until SIGINT or SIGTERM; `ready` is called once listening."""
        await self.start(host, port, shared)
        try:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            ready()
            await stop.wait()
            await self.drain()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await self.runner.cleanup()

    async def drain(self) -> None:
        """Stops taking connections, says going away (1001) on every WebSocket, and waits up
        to `drain_for` seconds for the requests in flight; those still running then are
        answered 503 where their answer has not begun, and cut where it has."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._stopping = True
        if self._listener is not None:
            self._listener.close()  # new connections are refused from here
        log.info("stopping: %d requests and WebSockets in flight", len(self._flight))
        told: set[web.WebSocketResponse] = set()
        closing: set[asyncio.Task[None]] = set()
        while True:
            self.connections.drain()  # idle connections closed, relayed streams told
            for request in list(self._flight.values()):
                ws = request.get(_SOCKET)
                if ws is not None and ws not in told and not request.get(RELAYED) and ws.prepared:
                    told.add(ws)
                    closing.add(asyncio.ensure_future(self._going_away(ws, told)))
            if not self._flight or loop.time() - began >= self.drain_for:
                break
            await asyncio.sleep(_SWEEP)
        if self._flight:  # overdue: answered 503 (see _in_flight), or cut
            log.warning("%d requests still running after %.0fs: ended", len(self._flight),
                        self.drain_for)  # fmt: skip
            for task in list(self._flight):
                self._overdue.add(task)
                task.cancel()
            await asyncio.wait(list(self._flight), timeout=_LAST)
        for task in closing:
            task.cancel()
        log.info("drained in %.2fs", loop.time() - began)

    @staticmethod
    async def _going_away(ws: web.WebSocketResponse, told: set[web.WebSocketResponse]) -> None:
        """Closes one of aiohttp's WebSockets with 1001 (its handler then ends)."""
        try:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        except RuntimeError:  # not quite ready to write: told on the next sweep
            told.discard(ws)

    def _in_flight(self) -> Any:
        """The middleware that keeps the requests being served, and answers one still
        running at the drain's deadline with a 503 in its surface's error shape."""

        @web.middleware
        async def in_flight(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._flight[task] = request
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if task not in self._overdue or request.writer.output_size > 0:
                    raise  # not ours, or its answer has begun: the connection is cut
                task.uncancel()
                with logs.bind(request_id=request_id(request)):
                    stopping = errors.Unavailable("The server is stopping; try again")
                    answer = refusal(request, stopping, 503)
                answer.headers["Retry-After"] = "1"
                return answer
            finally:
                del self._flight[task]
                self._overdue.discard(task)

        return in_flight

    async def _prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        """While draining, every answer closes its connection; a WebSocket is kept, to be
        closed with 1001."""
        if isinstance(response, web.WebSocketResponse):
            request[_SOCKET] = response
        if self._stopping:
            response.force_close()
