"""The origin's HTTP server: aiohttp's, on one port, for the function targets and the relay.

aiohttp parses requests, frames answers, keeps connections alive and answers WebSocket
upgrades; `tether.origin.guard` adds the limits it lacks, in front of every connection, and the
app's middleware those of each request (`tether.origin.apps`). A plain request runs on a worker
thread (`tether.origin.wsgi`); WebSockets are served on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tether.origin import guard
from tether.origin.apps import front_app, wsgi_app
from tether.origin.guard import Connections, Limits
from tether.origin.wsgi import WsgiApp
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

    def __init__(self, app: WsgiApp = wsgi_app, limits: Limits | None = None) -> None:
        self.connections = Connections(limits or Limits())
        self.runner = web.AppRunner(front_app(self.connections, app), handle_signals=False)
        self.port = 0
        self._listener: asyncio.Server | None = None

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
        finally:
            await self.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await self.runner.cleanup()
