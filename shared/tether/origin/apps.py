"""What the origin serves: the function targets as one WSGI app (routed by
`tether.targets.ROUTES` and its default, as the cloud's load balancer routes), the relay's
routes and the Prometheus metrics (`/metrics`), on one aiohttp app whose middleware holds the
limits every request gets. Every answer carries an `X-Request-Id`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from werkzeug.wrappers import Request

from tether import bootstrap, errors, logs
from tether.origin.guard import CONNECTIONS, MAX_BODY, SERVING, Connections
from tether.origin.wsgi import WsgiApp, WsgiTargets
from tether.relay import app as relay
from tether.relay.streams import blocking, request_id
from tether.service import audit, metrics
from tether.surfaces.http import status_for
from tether.surfaces.shapes import render
from tether.targets import DEFAULT_TARGET, HTTP_TARGETS, target_for

if TYPE_CHECKING:
    from tether.core.ports import Store

log = logging.getLogger(__name__)

# What the targets and the relay answer; anything else (CONNECT, TRACE, WebDAV's) is a 405.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Set on a request the function targets answer: their Router counted it and named its answer.
_TARGETS = web.RequestKey("targets", bool)


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
    wsgi = WsgiTargets(app)

    async def targets(request: web.Request) -> web.StreamResponse:
        request[_TARGETS] = True
        return await wsgi.handle(request)

    @web.middleware
    async def limited(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        ids = logs.trace_ids(request.headers)  # the relay's lines and refusals name the request
        with connections.serving(request.transport) as serving, \
                logs.bind(request_id=request_id(request), **ids):  # fmt: skip
            request[SERVING] = serving
            response = await _limited(request, handler)
            serving.ending = response.keep_alive is False  # None: not decided, so kept
        if not request.get(_TARGETS):  # the relay's, /metrics, a refusal: counted here
            upgraded = response.status == 101  # a WebSocket: its time is its life, not timed
            seconds = None if upgraded else time.perf_counter() - started
            metrics.request("relay", request.method, response.status, seconds)
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
    front.on_response_prepare.append(_request_id)
    metrics.enable(_counted)
    front.router.add_get("/metrics", scrape)
    relay.add_routes(front, targets)
    # Any path, a newline in it too (which `.*` would not match).
    front.router.add_route("*", r"/{path:[\s\S]*}", targets, expect_handler=expect)

    async def stop_threads(_: web.Application) -> None:
        wsgi.close()

    front.on_cleanup.append(stop_threads)
    return front


async def _request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names its request: the targets' Router has (the id recorded in the audit
    log); anything else gets the relay's id of the request (`streams.request_id`)."""
    if not (request.get(_TARGETS) and audit.HEADER in response.headers):
        response.headers[audit.HEADER] = request_id(request)


def _counted() -> tuple[Store, float]:
    services = bootstrap.services()
    return services.store, services.agents.grace


async def scrape(request: web.Request) -> web.StreamResponse:
    """Prometheus' text format, for an admin's credential (`Authorization: Bearer <key or JWT>`
    or `X-API-Key`): what is counted says what the sessions and agents are."""

    def exposed() -> bytes:
        who = bootstrap.services().auth.authenticate(
            request.headers.get("Authorization"), request.headers.get("X-API-Key")
        )
        if not who.is_admin:
            raise errors.Forbidden("Metrics are for admins", code="ADMIN_REQUIRED")
        return metrics.exposition()

    try:
        body = await blocking(exposed)
    except errors.TetherError as exc:
        refused = refusal(request, exc, status_for(exc), keep=True)
        if refused.status == 401:
            refused.headers["WWW-Authenticate"] = "Bearer"
        return refused
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE,
                                            "Cache-Control": "no-store"})  # fmt: skip


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
