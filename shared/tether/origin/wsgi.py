"""The function targets (a WSGI app) served by aiohttp: each request runs on a worker thread
with its body read first, and the work it deferred (`tether.deferred.later`) runs once its
answer is sent.

The environ follows PEP 3333 to the letter: PATH_INFO holds the path's bytes as latin-1 text
(werkzeug decodes them as UTF-8 again), so a path like `/v1/sessions/%E2%82%AC` reaches the
targets and is answered as any unknown id is.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from tether import deferred
from tether.origin.guard import SERVING

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
_SKIPPED = {"CONTENT_LENGTH", "TRANSFER_ENCODING", "CONNECTION", "KEEP_ALIVE", "UPGRADE"}


class Answer:
    """What a WSGI call produced: status, headers, the whole body, and its deferred work."""

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.pending: list[Callable[[], object]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        self.status, self.headers = status, headers
        return lambda data: None  # the legacy write() callable; our targets never use it


class WsgiTargets:
    def __init__(self, app: WsgiApp, threads: int = 64) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="http")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # at most the app's client_max_size, else a 413
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self._call, environ(request, body))
        code, _, reason = answer.status.partition(" ")
        response = web.Response(status=int(code), reason=reason or None, body=answer.body)
        for name, value in answer.headers:
            if name.lower() != "content-length":  # aiohttp sets it from the body
                response.headers.add(name, value)
        if answer.pending:  # the answer goes out first; the connection's next request waits
            await response.prepare(request)
            await response.write_eof()
            serving = request.get(SERVING)
            if serving is not None:
                serving.answer_sent()  # the client's next request may be on its way
            await loop.run_in_executor(self.pool, deferred.run, answer.pending)
        return response

    def _call(self, environ: dict[str, Any]) -> Answer:
        answer = Answer()
        with deferred.collecting() as answer.pending:
            chunks = self.app(environ, answer.start_response)
            try:
                answer.body = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        return answer

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def environ(request: web.Request, body: bytes) -> dict[str, Any]:
    path, _, query = request.raw_path.partition("?")
    raw_path = path.encode("utf-8", "surrogateescape")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    server = sockname if isinstance(sockname, tuple) else ("localhost", 0)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    remote = peer if isinstance(peer, tuple) else ("", 0)
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.encode("utf-8", "surrogateescape").decode("latin-1"),
        "REQUEST_URI": raw_path.decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REMOTE_ADDR": str(remote[0]),
        "REMOTE_PORT": str(remote[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.raw_headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            env[key] = text
        elif key not in _SKIPPED:
            key = "HTTP_" + key
            env[key] = f"{env[key]},{text}" if key in env else text
    return env
