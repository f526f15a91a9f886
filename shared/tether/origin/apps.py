"""What the origin serves: the function targets as one WSGI app (routed by
`tether.targets.ROUTES` and its default, as the cloud's load balancer routes) and the relay's
routes, on one aiohttp app whose middleware holds the limits every request gets."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from werkzeug.wrappers import Request

from tether import errors
from tether.origin.guard import CONNECTIONS, MAX_BODY, SERVING, Connections
from tether.origin.wsgi import WsgiApp, WsgiTargets
from tether.relay import app as relay
from tether.surfaces.shapes import render
from tether.targets import DEFAULT_TARGET, HTTP_TARGETS, target_for

log = logging.getLogger(__name__)

# What the targets and the relay answer; anything else (CONNECT, TRACE, WebDAV's) is a 405.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    request = Request(environ)
    response = HTTP_TARGETS[target_for(request.path) or DEFAULT_TARGET](request)
    return response(environ, start_response)


def refusal(
    request: web.Request, error: errors.TetherError, status: int, keep: bool = False
) -> web.Response:
    """An answer given before any handler runs; the connection ends with it (the body it
    refuses may still be on its way) unless `keep`."""
    made = render(request.path, error, status)
    response = web.Response(status=status, body=made.get_data(), content_type=made.mimetype)
    if status == 405:
        response.headers["Allow"] = ", ".join(sorted(METHODS))
    if not keep:
        response.force_close()
    return response


def front_app(connections: Connections, app: WsgiApp = wsgi_app) -> web.Application:
    targets = WsgiTargets(app)

    @web.middleware
    async def limited(request: web.Request, handler: Any) -> web.StreamResponse:
        with connections.serving(request.transport) as serving:
            request[SERVING] = serving
            response = await _limited(request, handler)
            serving.ending = response.keep_alive is False  # None: not decided, so kept
            return response

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: a body too large is refused before the client sends it."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return refusal(request, errors.Invalid("Unsupported Expect", field="Expect"), 417)
        if (request.content_length or 0) > MAX_BODY:
            return refusal(request, _too_large(), 413)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    front = web.Application(client_max_size=MAX_BODY, middlewares=[limited])
    front[CONNECTIONS] = connections  # the relay's splices take their connection from it
    relay.add_routes(front, targets.handle)
    # Any path, a newline in it too (which `.*` would not match).
    front.router.add_route("*", r"/{path:[\s\S]*}", targets.handle, expect_handler=expect)

    async def stop_threads(_: web.Application) -> None:
        targets.close()

    front.on_cleanup.append(stop_threads)
    return front


async def _limited(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method not in METHODS:
        return refusal(request, errors.Invalid("Method Not Allowed", field="method"), 405)
    if (request.content_length or 0) > MAX_BODY:
        return refusal(request, _too_large(), 413)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
        return refusal(request, _too_large(), 413)
    except web.HTTPException as exc:  # aiohttp's own answers (a file that is not there)
        if exc.status < 400:
            raise
        return refusal(request, errors.TetherError(exc.reason), exc.status, keep=True)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return refusal(request, errors.TetherError("Internal server error"), 500)


def _too_large() -> errors.Invalid:
    return errors.Invalid(f"Request body too large: at most {MAX_BODY >> 20} MiB", field="body")
