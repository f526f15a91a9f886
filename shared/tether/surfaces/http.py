"""What every HTTP surface shares: routing, body and query parsing, error status mapping."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, TypeVar, get_args, get_origin

import orjson
from pydantic import BaseModel, BeforeValidator, ValidationError
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.routing import BaseConverter, Map, MapAdapter, Rule
from werkzeug.routing import ValidationError as NotThisRule
from werkzeug.wrappers import Request, Response

from tether import errors, logs
from tether.core.models import Principal
from tether.service import audit, metrics
from tether.service.idempotency import Answer

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def _integral(value: Any) -> Any:
    """JSON has one number type: 5.0 is the integer 5 (as JSON Schema says), "5" is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# For an integer field of a JSON body (validated strictly: see parse_body), after its bounds so
# they stay in its JSON Schema: `Annotated[int, Field(ge=1), INTEGRAL]`.
INTEGRAL = BeforeValidator(_integral)
Handler = Callable[..., Response]
ErrorRenderer = Callable[[errors.TetherError, int], Response]

_STATUS: list[tuple[type[errors.TetherError], int]] = [
    (errors.Unprocessable, 422),
    (errors.Invalid, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),  # InvalidTransition included
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
    (errors.Timeout, 504),
    (errors.Unsupported, 501),
]


READS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENCY_KEY = "Idempotency-Key"


def may(principal: Principal, method: str) -> Principal:
    """`principal`, if its credential allows `method` (a read-only API key reads only)."""
    if principal.read_only and method not in READS:
        raise errors.Forbidden("This API key is read-only", code="AUTH_READ_ONLY")
    return principal


def caller(request: Request) -> Principal:
    """Who sent `request` (`Authorization: Bearer <JWT or API key>` or `X-API-Key`), if their
    credential allows its method; asked once a request (a rate limiter may ask first)."""
    cached = request.environ.get("tether.principal")
    if isinstance(cached, Principal):
        return may(cached, request.method)
    from tether import bootstrap

    principal = bootstrap.services().auth.authenticate(
        request.headers.get("Authorization"), request.headers.get("X-API-Key")
    )
    request.environ["tether.principal"] = principal
    return may(principal, request.method)


def iso(when: datetime | None) -> str | None:
    """A time as the surfaces write it: UTC, to the second, with a Z."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


RETRY_AFTER = 5  # seconds a 503 asks a client to wait when its error does not say


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
    """The address a request came from (`forwarded_client`)."""
    forwarded = request.headers.getlist("X-Forwarded-For")
    return forwarded_client(request.remote_addr or "unknown", forwarded, trusted)


def forwarded_client(address: str, forwarded: list[str], trusted: Callable[[str], bool]) -> str:
    """The client of a connection from `address`. Behind trusted proxies (the cloud's load
    balancer, `TETHER_TRUSTED_PROXIES`), X-Forwarded-For (`forwarded`, its headers) names it:
    each proxy appends the address it was called from, so the client is the last entry that
    is not itself a trusted proxy. Anything before that was written by the client, and is
    never believed."""
    if not trusted(address):
        return address
    hops = [h.strip() for h in ",".join(forwarded).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not trusted(hop):
            return hop
        address = hop
    return address


# What a provisioner's details may show a client: names, never a host path or an address of
# the workspace's runtime (reached by agents and the relay only).
PUBLIC_DETAILS = ("service_name", "bucket_name", "region", "k8s_namespace", "pod_name", "pvc_name")


def public_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a session's `details` a client may see."""
    shown = {k: details.get(k) for k in PUBLIC_DETAILS}
    return {k: v for k, v in shown.items() if v is not None and not str(v).startswith("/")}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`data` as JSON: a pydantic model as its schema says (its aliases, JSON types)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    body = orjson.dumps(data, default=str)  # default: what JSON lacks (a Path, say) as text
    return Response(body, status=status, headers=headers, mimetype="application/json")


def closing_json_response(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response that ends the connection, for answers given before any app
    runs (a request that cannot be read, a refused WebSocket upgrade). Logged, with the
    request id its body and `X-Request-Id` carry."""
    made = request_id()
    data = json.dumps({**body, "request_id": made}).encode()
    log.info("refused before any app ran: %d %s", status, body.get("detail", ""),
             extra={"request_id": made})  # fmt: skip
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"{audit.HEADER}: {made}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
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
    invalid = errors.Invalid(f"Invalid {where} field '{field}': {message}", field=field, code=code)
    invalid.problems = tuple(
        (".".join(str(p) for p in e["loc"]) or where, e["msg"]) for e in exc.errors()
    )
    return invalid


def parse_body(request: Request, model: type[M]) -> M:
    return read_json(request.get_data(cache=True), model)


def read_json(raw: bytes, model: type[M]) -> M:
    """A JSON body as `model` reads it; Invalid names the field that is wrong."""
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.Invalid("Request body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise errors.Invalid("Request body must be a JSON object", field="body")
    try:
        # Strict: a JSON body has types of its own, so "yes" is not a boolean nor "5" a number
        # (a query string, all text, is read laxly).
        return model.model_validate_json(raw if data else b"{}", strict=True)
    except ValidationError as exc:
        raise _describe(exc, "body") from None


def parse_query(request: Request, model: type[M]) -> M:
    return read_query(request.args.to_dict(), request.args.getlist, model)


def read_query(first: dict[str, str], every: Callable[[str], list[str]], model: type[M]) -> M:
    """A query string as `model` reads it (`first`: each name's first value; `every`: all of
    a name's): a field typed as a list takes every value given for it
    (`?metadata=a=1&metadata=b=2`), any other one value (given twice, it is refused)."""
    args: dict[str, Any] = dict(first)
    for name, spec in model.model_fields.items():
        if name not in args:
            continue
        kinds = (spec.annotation, *get_args(spec.annotation))  # list[str] | None too
        if any(get_origin(kind) is list for kind in kinds):
            args[name] = every(name)
        elif len(every(name)) > 1:  # one value, given twice: which was meant is anyone's guess
            raise errors.Invalid(f"Invalid query field '{name}': given more than once",
                                 field=name, code="INVALID_PARAMETER")  # fmt: skip
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise _describe(exc, "query") from None


@dataclass(frozen=True)
class Operation:
    """One route of a surface, as its OpenAPI document describes it: the models the router
    validates the request with are the schema, and so are the models its answers are made of."""

    path: str  # werkzeug's rule, e.g. /v1/sessions/<session_id>
    method: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None  # parsed and passed to the handler as `body`
    query: type[BaseModel] | None = None  # parsed and passed as `query`
    answers: Mapping[int, type[BaseModel] | None] = field(default_factory=lambda: {200: None})
    errors: tuple[int, ...] = ()  # statuses beyond those every operation may answer
    public: bool = False  # no credential needed
    listed: bool = True  # in the surface's document (its own routes are not)
    idempotent: bool = False  # a create: takes an Idempotency-Key
    # Where some clients send the body's fields as a query string with no body: read with this
    # model (undocumented: the document keeps the body's one shape).
    body_in_query: type[BaseModel] | None = None
    media: str | None = None  # a success answered as bytes of this type (a file), not JSON
    upload: str | None = None  # the body is multipart/form-data: a file in the part so named
    raw: str | None = None  # the body is bytes of this type (a file), not JSON


class _Segment(BaseConverter):
    """A path segment that is none of the words given (`<segment("stats"):agent_id>`), so a
    sibling route's fixed word is never also taken for an id (and a 405's Allow is exact)."""

    def __init__(self, map: Map, *reserved: str) -> None:
        super().__init__(map)
        self.reserved = set(reserved)

    def to_python(self, value: str) -> str:
        if value in self.reserved:
            raise NotThisRule()
        return value


class Router:
    """Routes a request to its handler and turns every error into the surface's error body."""

    def __init__(self, render_error: ErrorRenderer, owner: Callable[[Request], str]) -> None:
        """`owner` names the caller of a request (whose Idempotency-Keys are theirs alone)."""
        self.map = Map(strict_slashes=False, merge_slashes=False, converters={"segment": _Segment})
        self.operations: dict[str, Operation] = {}
        self.render_error = render_error
        self.owner = owner

    def route(
        self,
        path: str,
        methods: list[str],
        *,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        answers: Mapping[int, type[BaseModel] | None] | None = None,
        errors: tuple[int, ...] = (),
        public: bool = False,
        listed: bool = True,
        idempotent: bool = False,
        body_in_query: type[BaseModel] | None = None,
        media: str | None = None,
        upload: str | None = None,
        raw: str | None = None,
    ) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            for method in methods:
                name = f"{handler.__name__}:{path}:{method}"
                self.map.add(Rule(path, endpoint=name, methods=[method]))
                summary = (handler.__doc__ or handler.__name__.replace("_", " ")).strip()
                self.operations[name] = Operation(
                    path, method, handler, summary.split("\n")[0], body, query,
                    answers or {200: None}, errors, public, listed, idempotent, body_in_query,
                    media, upload, raw,
                )  # fmt: skip
            return handler

        return add

    @functools.cached_property
    def _match(self) -> Callable[[str, str], tuple[Any, Mapping[str, Any]]]:
        """The rule for a path and method. The map is bound once: a match needs only those two
        (no URL is ever built), and binding to each request's environ cost more than the match.
        Matches are remembered, since a session's paths repeat; a miss raises every time."""
        adapter: MapAdapter = self.map.bind("tether")
        return functools.lru_cache(maxsize=4096)(adapter.match)

    def _run(self, request: Request, operation: Operation, args: dict[str, Any]) -> Response:
        if operation.query is not None:
            args["query"] = parse_query(request, operation.query)
        if operation.body is not None:
            args["body"] = self._body(request, operation.body, operation.body_in_query)
        return operation.handler(request, **args)

    @staticmethod
    def _body(request: Request, model: type[M], in_query: type[BaseModel] | None) -> M:
        """The body, or, with no body at all and the query carrying every field `in_query`
        requires, the body's fields read from the query string."""
        if (
            in_query is not None
            and not request.get_data(cache=True).strip()
            and all(
                name in request.args for name, f in in_query.model_fields.items() if f.is_required()
            )
        ):
            return model.model_validate(parse_query(request, in_query).model_dump())
        return parse_body(request, model)

    def _once(
        self, request: Request, operation: Operation, args: dict[str, Any], key: str
    ) -> Response:
        """A create with an Idempotency-Key: run once, its answer kept for repeats."""
        from tether import bootstrap

        def work() -> Answer:
            try:
                response = self._run(request, operation, args)
            except errors.TetherError as exc:
                response = self.refusal(exc)
            return Answer(response.status_code, response.get_data(), response.content_type or "")

        # The same request is the same method, path, query and body bytes.
        same = b"\0".join([request.method.encode(), request.full_path.encode(),
                            request.get_data(cache=True)])  # fmt: skip
        answer = bootstrap.services().idempotency.run(self.owner(request), key, same, work)
        return Response(answer.body, status=answer.status, content_type=answer.content_type)

    def refusal(self, error: errors.TetherError) -> Response:
        """`error` in the surface's shape; one that passes (503) says when to try again."""
        response = self.render_error(error, status_for(error))
        if isinstance(error, errors.Unavailable) and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(error.details.get("retry_after", RETRY_AFTER))
        return response

    def _allowed(self, path: str) -> list[str]:
        """The methods `path` is served for. (werkzeug's own list counts a rule whose converter
        refuses the path, like a fixed word taken for an id.)"""
        allowed = []
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
            try:
                self._match(path, method)
            except (NoRoute, MethodNotAllowed):
                continue
            allowed.append(method)
        return allowed

    @functools.cached_property
    def surface(self) -> str:
        """The surface whose routes these are (`onmemos`): its first route's module names it."""
        first = next(iter(self.operations.values()), None)
        module = first.handler.__module__.split(".") if first else []
        return module[2] if module[:2] == ["tether", "surfaces"] and len(module) > 2 else "other"

    def __call__(self, request: Request) -> Response:
        """The answer to `request`, with its `X-Request-Id`; counted, and recorded in the audit
        log when it may change something (any method but a read's)."""
        started = time.perf_counter()
        found: list[tuple[Operation, Mapping[str, Any]]] = []
        with request_scope(request) as request_id:
            response = self._answer(request, found)
        response.headers[audit.HEADER] = request_id
        metrics.request(self.surface, request.method, response.status_code,
                        time.perf_counter() - started)  # fmt: skip
        if found and request.method not in READS and _audited(found[0][0]):
            self._record(request, *found[0], response, request_id)
        return response

    def _answer(
        self, request: Request, found: list[tuple[Operation, Mapping[str, Any]]]
    ) -> Response:
        try:
            endpoint, args = self._match(request.path, request.method)
            operation = self.operations[str(endpoint)]
            found.append((operation, args))
            key = request.headers.get(IDEMPOTENCY_KEY)
            with logs.bind(session_id=_session_of(args)):
                if operation.idempotent and key is not None:
                    return self._once(request, operation, dict(args), key)
                return self._run(request, operation, dict(args))
        except errors.TetherError as exc:
            return self.refusal(exc)
        except NoRoute:  # in the shape of the surface whose prefix the path is under
            from tether.surfaces import shapes

            return shapes.render(request.path, errors.NotFound("Not Found"), 404)
        except MethodNotAllowed:
            response = self.render_error(errors.Invalid("Method Not Allowed", field="method"), 405)
            response.headers["Allow"] = ", ".join(self._allowed(request.path))
            return response
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return self.render_error(errors.TetherError("Internal server error"), 500)

    def _record(
        self,
        request: Request,
        operation: Operation,
        args: Mapping[str, Any],
        response: Response,
        request_id: str,
    ) -> None:
        """One audit record of a call that may have changed something; never raises."""
        from tether import bootstrap

        try:
            actor = _actor(request, operation)
            target = "/".join(str(v) for v in args.values()) or _made(response)
            action = f"{self.surface}.{operation.handler.__name__}"
            bootstrap.services().audit.record(
                actor, action, target, response.status_code, request_id
            )
        except Exception:
            log.exception("audit: %s %s not recorded", request.method, request.path)


def _audited(operation: Operation) -> bool:
    """Whether a call of `operation` is recorded: every one that may change something, but a
    heartbeat (which says only that its sender is alive, every few seconds)."""
    return not operation.handler.__name__.endswith("heartbeat")


def _actor(request: Request, operation: Operation) -> str | None:
    """Who made the call: the principal its credential was, else, for a sign-in (a route that
    needs no credential), the username its body named (never anything else of the body)."""
    principal = request.environ.get("tether.principal")
    if isinstance(principal, Principal):
        return principal.id
    if not operation.public or operation.body is None:
        return None
    try:
        named = orjson.loads(request.get_data(cache=True) or b"{}")
    except orjson.JSONDecodeError:
        return None
    username = named.get("username") if isinstance(named, dict) else None
    return username if isinstance(username, str) and username else None


def _made(response: Response, most: int = 64 << 10) -> str:
    """The id of what a create made, from its JSON answer (`id` or `session_id`); ""."""
    if response.status_code not in (200, 201) or response.mimetype != "application/json":
        return ""
    if response.is_streamed or (response.content_length or 0) > most:
        return ""
    try:
        made = orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(made, dict):
        return ""
    found = made.get("session_id", made.get("id"))
    return found if isinstance(found, str) else ""


REQUEST_ID_FIELD = "The request's id: its X-Request-Id, and the id its log lines carry"


@contextlib.contextmanager
def request_scope(request: Request) -> Iterator[str]:
    """Binds the request's id (its client's `X-Request-Id` if well formed, else a new one) and
    trace for the lines logged while it is answered, and for its error body; yields the id.
    Inside a scope already bound (a target's, around its router), that scope's id."""
    outer = logs.bound("request_id")
    if outer is not None:
        yield outer
        return
    request_id = audit.request_id(request.headers.get(audit.HEADER))
    with logs.bind(request_id=request_id, **logs.trace_ids(request.headers)):
        yield request_id


def request_id() -> str:
    """The id of the request being answered (for an error body: the one its log lines and its
    `X-Request-Id` carry); a new one outside any request."""
    return logs.bound("request_id") or audit.request_id(None)


def _session_of(args: Mapping[str, Any]) -> str | None:
    """The session a route's path names, for its log lines (`/sessions/<session_id>/...`)."""
    value = args.get("session_id")
    return value if isinstance(value, str) else None
