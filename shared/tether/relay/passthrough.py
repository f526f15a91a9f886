"""Plain HTTP calls relayed to a session's runtime: a streamed command's events, background
processes, files, and the traffic of one of its ports (for its owner, or for anyone with a
preview link). WebSocket upgrades on these paths are relayed as the terminal's are.

Each call is checked as every relay route is (Origin, credential, ownership; a read-only key
only reads), its body and query validated with the OnMemOS document's own models
(`tether.surfaces.onmemos_live`), then sent on with aiohttp's client and streamed back both
ways: a file passes through in chunks, never whole in memory. The caller's credential never
goes on to the workspace, and what the runtime answers is the workspace's words: only the
headers a client needs come back (a port's page cannot set cookies on this origin, and runs
sandboxed: its scripts get an origin of their own, never this one's credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel

from tether import bootstrap, errors
from tether.core.models import ActivitySource, Principal, Session
from tether.errors import TetherError
from tether.origin.guard import MAX_BODY
from tether.relay import access, streams
from tether.relay.streams import Route, blocking, onmemos_refusal
from tether.service.previews import GONE
from tether.surfaces import onmemos_live as live
from tether.surfaces.http import read_json, read_query, status_for

Headers = CIMultiDictProxy[str]
SESSION = "/v1/sessions/{session_id}"
CONNECT_WITHIN = 10.0  # seconds to reach the runtime
UNREACHABLE = "RUNTIME_UNREACHABLE"
# What a client needs of the runtime's answer to an API call.
API_HEADERS = {"content-type", "content-disposition", "last-modified", "etag"}
# What never passes either way: the connection's own (RFC 9110 7.6.1), and what a port's app
# must not set on this origin, nor be sent from it.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
       "transfer-encoding", "upgrade", "host", "content-length"}  # fmt: skip
NOT_FROM_APPS = {"set-cookie", "clear-site-data", "strict-transport-security",
                 "service-worker-allowed"}  # fmt: skip
NOT_TO_APPS = {"cookie", "x-api-key", "x-forwarded-for", "x-forwarded-host",
               "x-forwarded-proto", "x-forwarded-prefix"}  # fmt: skip
# A port's page runs in an origin of its own (scripts, forms and popups allowed).
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # after the session's: /processes/{pid}/stdin
    source: ActivitySource
    operation: Callable[..., object]  # its declaration in the OnMemOS document
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    raw: bool = False  # the body is bytes, streamed on (a file)

    @property
    def action(self) -> str:
        """Its name in the audit log, as the Router names the functions' calls."""
        return f"onmemos.{self.operation.__name__}"


CALLS = (
    Call("POST", "/exec/stream", "exec", live.exec_stream, live.StreamedCommand),
    Call("POST", "/processes", "process", live.start_process, live.StartProcess),
    Call("GET", "/processes", "process", live.list_processes),
    Call("GET", "/processes/{pid}", "process", live.get_process),
    Call("POST", "/processes/{pid}/stdin", "process", live.process_stdin, live.Stdin),
    Call("POST", "/processes/{pid}/kill", "process", live.kill_process, live.Kill),
    Call("GET", "/processes/{pid}/output", "process", live.process_output, query=live.OutputQuery),
    Call("GET", "/files", "files", live.list_files, query=live.PathQuery),
    Call("DELETE", "/files", "files", live.remove_file, query=live.RemoveQuery),
    Call("GET", "/files/stat", "files", live.stat_file, query=live.PathQuery),
    Call("POST", "/files/mkdir", "files", live.make_directory, query=live.PathQuery),
    Call("GET", "/files/content", "files", live.download_file, query=live.PathQuery),
    Call("PUT", "/files/content", "files", live.upload_file, query=live.PathQuery, raw=True),
)
# WebSockets on these paths: a streamed command, a process's output, a port's traffic.
SOCKETS = (
    Route(SESSION + "/exec/ws", "/exec/ws", source="exec"),
    Route(
        SESSION + r"/processes/{pid:\d+}/output",
        "/processes/{pid}/output",
        {"follow": None},
        source="process",
    ),
    Route(
        SESSION + r"/ports/{port:\d+}{tail:(/.*)?}",
        "/ports/{port}{tail}",
        every_query=True,
        source="port",
    ),
)
CALLER = web.RequestKey("caller", Principal)  # who made a relayed call, once admitted
PREVIEW = r"/preview/{token:[A-Za-z0-9_.-]+}{tail:(/.*)?}"


def add_routes(app: web.Application, otherwise: streams.Handler) -> None:
    """The calls' paths (any other method on them goes to `otherwise`, the targets)."""
    by_path: dict[str, dict[str, Call]] = {}
    for call in CALLS:
        by_path.setdefault(call.path, {})[call.method] = call
    sockets = {route.path: route for route in SOCKETS}
    for path, calls in by_path.items():
        pattern = SESSION + path.replace("{pid}", r"{pid:\d+}")
        app.router.add_route("*", pattern, _dispatch(calls, sockets.pop(pattern, None), otherwise))
    for route in sockets.values():  # the ports': any method
        app.router.add_route("*", route.path, _port(route))
    app.router.add_route("*", PREVIEW, _preview)


def _dispatch(calls: dict[str, Call], socket: Route | None, otherwise: streams.Handler) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        if socket is not None and socket.wanted(request):
            return await _socket(request, socket)
        call = calls.get(request.method)
        if call is None:
            return await otherwise(request)
        response = await _relay(request, call)
        if call.method != "GET":  # every call that changes something is in the audit log
            who = request.get(CALLER)
            streams.audited(request, who, call.action, request.match_info["session_id"],
                            response.status)  # fmt: skip
        return response

    return handle


async def _socket(request: web.Request, route: Route) -> web.StreamResponse:
    allowed = await _admit(request, write=True)
    if isinstance(allowed, web.Response):
        return allowed
    await blocking(bootstrap.services().sessions.touch, allowed[1], route.source)
    return await streams.serve(request, route, allowed)


async def _relay(request: web.Request, call: Call) -> web.StreamResponse:
    try:
        if call.query is not None:
            read_query(dict(request.query), request.query.getall, call.query)
        body: bytes | _Bounded | None = None
        if call.body is not None:
            model = read_json(await request.read(), call.body)  # the origin bounds it (32 MiB)
            body = model.model_dump_json(exclude_none=True).encode()
    except TetherError as exc:
        return _refusal(exc)
    allowed = await _admit(request, write=call.method != "GET")
    if isinstance(allowed, web.Response):
        return allowed
    who, session = allowed
    request[CALLER] = who
    await blocking(bootstrap.services().sessions.touch, session, call.source)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if call.raw:
        body = _Bounded(request)
        headers = {"Content-Type": "application/octet-stream"}
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
    accept = request.headers.get("Accept")
    if accept:
        headers["Accept"] = accept
    runtime_path = call.path.format_map(request.match_info)
    sent = _Sent(runtime_path, headers, body, _api_headers, call.source)
    return await _forward(request, who, session, sent)


def _port(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if not 1 <= int(request.match_info["port"]) <= 65535:
            return _refusal(errors.Invalid("port: from 1 to 65535", field="port"))
        if route.wanted(request):
            return await _socket(request, route)
        allowed = await _admit(request, write=request.method not in ("GET", "HEAD", "OPTIONS"))
        if isinstance(allowed, web.Response):
            return allowed
        port = int(request.match_info["port"])
        prefix = f"/v1/sessions/{request.match_info['session_id']}/ports/{port}"
        return await _to_port(request, allowed, port, prefix)

    return handle


async def _preview(request: web.Request) -> web.StreamResponse:
    """A preview link's traffic: the link is the credential (`tether.service.previews`)."""
    token, tail = request.match_info["token"], request.match_info["tail"]
    if not tail:  # relative links in the page resolve under the link's own path
        raise web.HTTPFound(
            f"/preview/{token}/" + (f"?{request.query_string}" if request.query_string else "")
        )
    try:
        admitted = await blocking(_previewed, token)
    except TetherError as exc:
        return _refusal(exc)
    who, session, port = admitted
    if streams.upgrading(request):
        await blocking(bootstrap.services().sessions.touch, session, "port")
        route = Route(PREVIEW, f"/ports/{port}" + "{tail}", every_query=True, source="port")
        return await streams.serve(request, route, (who, session))
    return await _to_port(request, (who, session), port, f"/preview/{token}")


def _previewed(token: str) -> tuple[Principal, Session, int]:
    services = bootstrap.services()
    link = services.previews.read(token)
    try:
        who = services.auth.current(link.principal)
        session = services.sessions.usable(who, link.session_id)
    except TetherError:  # its maker's access ended, or the session did
        raise GONE from None
    return who, session, link.port


async def _to_port(
    request: web.Request, allowed: tuple[Principal, Session], port: int, prefix: str
) -> web.StreamResponse:
    who, session = allowed
    await blocking(bootstrap.services().sessions.touch, session, "port")
    # The header that carried Tether's credential stays here; an app's own Authorization
    # passes when the key came as X-API-Key.
    used = "x-api-key" if "X-API-Key" in request.headers else "authorization"
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in HOP | NOT_TO_APPS | {used}}  # fmt: skip
    headers |= {"X-Forwarded-Host": request.host, "X-Forwarded-Proto": request.scheme,
                "X-Forwarded-Prefix": prefix}  # fmt: skip
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    body = _Bounded(request) if request.body_exists else None
    path = f"/ports/{port}{request.match_info['tail'] or '/'}"
    return await _forward(request, who, session, _Sent(path, headers, body, _app_headers, "port"))


async def _admit(request: web.Request, write: bool) -> tuple[Principal, Session] | web.Response:
    if not access.same_origin(request.headers.get("Origin"), request.host):
        return _refusal(errors.Forbidden("Cross-origin request refused"))
    try:
        return await blocking(
            access.authorize,
            request.match_info["session_id"],
            {},  # a credential in the query would go on to the workspace with it: headers only
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
            write,
        )
    except TetherError as exc:
        return _refusal(exc)


def _refusal(error: TetherError, status: int | None = None) -> web.Response:
    return onmemos_refusal(error, status or status_for(error))


@dataclass
class _Bounded:
    """The request's body as it comes, at most MAX_BODY bytes (a chunked one is counted)."""

    request: web.Request
    over: bool = False  # it went past: the call is refused, whatever the runtime made of it

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_any():
            seen += len(chunk)
            if seen > MAX_BODY:
                self.over = True
                raise _TooLarge
            yield chunk


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class _Sent:
    """What goes on to the runtime, and what of its answer's headers comes back."""

    path: str
    headers: dict[str, str]
    body: bytes | _Bounded | None
    passed: Callable[[Headers], CIMultiDict[str]]
    source: ActivitySource  # what it counts as while it lasts


async def _forward(
    request: web.Request, who: Principal, session: Session, sent: _Sent
) -> web.StreamResponse:
    """Sends the call on to the runtime and streams its answer back."""
    target = sent.path + (f"?{request.query_string}" if request.query_string else "")
    data = sent.body.chunks() if isinstance(sent.body, _Bounded) else sent.body
    try:
        async with _runtime(session) as (client, base, auth):
            upstream = await client.request(
                request.method, base + target, headers={**sent.headers, **auth},
                data=data, allow_redirects=False,
            )  # fmt: skip
            async with upstream:
                return await _stream_back(request, upstream, who, session.id, sent)
    except TetherError as exc:  # no ID token to call the workspace with
        return _refusal(errors.Unavailable(exc.message, code=UNREACHABLE), 502)
    except (_TooLarge, aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(sent.body, _Bounded) and sent.body.over:
            too_large = f"Request body too large: at most {MAX_BODY >> 20} MiB a request"
            refused = _refusal(errors.Invalid(too_large, field="body"), 413)
            refused.force_close()  # the rest of the body is still on its way: not read
            return refused
        unreachable = errors.Unavailable(f"Workspace runtime unreachable: {exc}", code=UNREACHABLE)
        return _refusal(unreachable, 502)


async def _stream_back(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    who: Principal,
    session_id: str,
    sent: _Sent,
) -> web.StreamResponse:
    """The runtime's answer, streamed to the client until it ends, the client leaves, or the
    session's end or the caller's access revoked cuts it. One cut short is never ended as if
    whole: the connection closes instead."""
    response = web.StreamResponse(status=upstream.status, headers=sent.passed(upstream.headers))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    pump = asyncio.ensure_future(_pump(upstream, response))
    watchers = (
        asyncio.ensure_future(streams.until_gone(request)),
        asyncio.ensure_future(streams.until_it_must_end(who, session_id, sent.source)),
    )
    try:
        await asyncio.wait([pump, *watchers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, *watchers):
            task.cancel()
    if pump.done() and not pump.cancelled() and pump.exception() is None:
        await response.write_eof()
    elif request.transport is not None:
        request.transport.close()
    return response


async def _pump(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)


@contextlib.asynccontextmanager
async def _runtime(
    session: Session,
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, dict[str, str]]]:
    """A client for one call to the session's runtime, its base URL and the headers it wants.
    A local runtime's socket is opened by descriptor, never by following a link there (the
    workspace may own its directory: `tether.provision.uds.connect_unix`)."""
    address = await streams.runtime_address(session, "")
    base = "http" + address.uri.removeprefix("ws")  # ws:// → http://, wss:// → https://
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_WITHIN, sock_connect=CONNECT_WITHIN)
    if address.unix is None:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as client:
            yield client, base, address.headers
        return
    fd = os.open(address.unix, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ConnectionRefusedError(f"{address.unix} is not a socket")
        connector = aiohttp.UnixConnector(path=f"/proc/self/fd/{fd}", force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False) as client:  # fmt: skip
            yield client, base, address.headers
    finally:
        os.close(fd)


def _api_headers(headers: Headers) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() in API_HEADERS)


def _app_headers(headers: Headers) -> CIMultiDict[str]:
    kept = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP | NOT_FROM_APPS)
    kept.add("Content-Security-Policy", SANDBOX)
    return kept
