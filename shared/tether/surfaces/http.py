"""What every HTTP surface shares: routing, body and query parsing, error status mapping."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.routing import Map, MapAdapter, Rule
from werkzeug.wrappers import Request, Response

from tether import errors

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Response]
ErrorRenderer = Callable[[errors.TetherError, int], Response]

_STATUS: list[tuple[type[errors.TetherError], int]] = [
    (errors.Invalid, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),  # InvalidTransition included
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
    (errors.Timeout, 504),
]


def status_for(error: errors.TetherError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


@functools.cache
def proxy_matcher(proxies: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether an address is one of `proxies` (addresses or CIDR networks)."""
    networks = [ipaddress.ip_network(p, strict=False) for p in proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    return trusted


def client_address(request: Request, trusted: Callable[[str], bool]) -> str:
    """The address a request came from. Behind trusted proxies (the cloud's load balancer,
    `TETHER_TRUSTED_PROXIES`), X-Forwarded-For names it: each proxy appends the address it
    was called from, so the client is the last entry that is not itself a trusted proxy.
    Anything before that was written by the client, and is never believed."""
    address = request.remote_addr or "unknown"
    if not trusted(address):
        return address
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not trusted(hop):
            return hop
        address = hop
    return address


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(data, default=str)  # default: what JSON lacks (a Path, say) as text
    return Response(body, status=status, headers=headers, mimetype="application/json")


def closing_json_response(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response that ends the connection, for answers given before any app
    runs (a request that cannot be read, a refused WebSocket upgrade)."""
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def _describe(exc: ValidationError, where: str) -> errors.Invalid:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or where
    message = first["msg"]
    if first["type"] == "missing":
        code = "MISSING_REQUIRED_FIELD"
    else:
        code = "INVALID_PARAMETER" if where == "query" else "VALIDATION_FAILED"
    return errors.Invalid(f"Invalid {where} field '{field}': {message}", field=field, code=code)


def parse_body(request: Request, model: type[M]) -> M:
    raw = request.get_data(cache=True)
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.Invalid("Request body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise errors.Invalid("Request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc, "body") from None


def parse_query(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise _describe(exc, "query") from None


class Router:
    """Routes a request to its handler and turns every error into the surface's error body."""

    def __init__(self, render_error: ErrorRenderer) -> None:
        self.map = Map(strict_slashes=False, merge_slashes=False)
        self.handlers: dict[str, Handler] = {}
        self.render_error = render_error

    def route(self, path: str, methods: list[str]) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            name = f"{handler.__name__}:{path}:{','.join(methods)}"
            self.map.add(Rule(path, endpoint=name, methods=methods))
            self.handlers[name] = handler
            return handler

        return add

    @functools.cached_property
    def _match(self) -> Callable[[str, str], tuple[Any, Mapping[str, Any]]]:
        """The rule for a path and method. The map is bound once: a match needs only those two
        (no URL is ever built), and binding to each request's environ cost more than the match.
        Matches are remembered, since a session's paths repeat; a miss raises every time."""
        adapter: MapAdapter = self.map.bind("tether")
        return functools.lru_cache(maxsize=4096)(adapter.match)

    def __call__(self, request: Request) -> Response:
        try:
            endpoint, args = self._match(request.path, request.method)
            return self.handlers[str(endpoint)](request, **args)
        except errors.TetherError as exc:
            return self.render_error(exc, status_for(exc))
        except NoRoute:
            return self.render_error(errors.NotFound("Not Found"), 404)
        except MethodNotAllowed:
            return self.render_error(errors.Invalid("Method Not Allowed", field="method"), 405)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return self.render_error(errors.TetherError("Internal server error"), 500)
