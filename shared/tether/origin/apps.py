"""What the origin serves: the function targets as one WSGI app (routed by
`tether.targets.ROUTES`, as the cloud's load balancer routes) and the relay's aiohttp app."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp_wsgi.wsgi import WSGIHandler
from werkzeug.wrappers import Request

from tether.errors import NotFound
from tether.relay import app as relay
from tether.surfaces.onmemos import render_error
from tether.targets import HTTP_TARGETS, target_for


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    request = Request(environ)
    name = target_for(request.path)
    if name is None:
        response = render_error(NotFound("Not Found"), 404)
    else:
        response = HTTP_TARGETS[name](request)
    if response.is_sequence and request.method != "HEAD" and response.status_code not in (204, 304):
        # A body held in memory (every JSON answer): its status, headers and bytes as they are,
        # which is all werkzeug's own WSGI call sends for one, at half the cost. Streamed, HEAD,
        # 204 and 304 answers still take that call.
        start_response(response.status, response.headers.to_wsgi_list())
        return response.response  # type: ignore[return-value]  # bytes: set_data encodes text
    return response(environ, start_response)


def relay_app(threads: int = 8) -> web.Application:
    """The relay's aiohttp app (the shell WebSocket, the viewer page, noVNC's files). A
    connection handed to it may go on with plain requests: those reach the function targets
    through WSGI, on up to `threads` worker threads."""
    app = web.Application()
    executor = ThreadPoolExecutor(threads, thread_name_prefix="http")
    relay.add_routes(app)
    app.router.add_route("*", "/{path_info:.*}", WSGIHandler(wsgi_app, executor=executor))

    async def stop_threads(_: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_threads)
    return app
