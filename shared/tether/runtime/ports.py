"""Ports: a request to `/ports/{port}/{path}` goes on to `http://127.0.0.1:{port}/{path}` in
the workspace, and its answer comes back, both streamed; a WebSocket upgrade is bridged frame
by frame. The runtime's own credential is never passed on to the workspace's server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tether.runtime import auth, websockets
from tether.runtime.activity import Activity
from tether.runtime.problems import problem

CHUNK = 64 << 10
MAX_FRAME = 16 << 20
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Host", auth.HEADER,
    )
)  # fmt: skip
WS_HANDSHAKE = ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                "sec-websocket-protocol", "content-length")  # fmt: skip
CLIENT: web.AppKey[list[aiohttp.ClientSession]] = web.AppKey("ports_client")
ACTIVITY = web.AppKey("ports_activity", Activity)


def _headers(
    given: CIMultiDict[str] | CIMultiDictProxy[str], drop: tuple[str, ...] = ()
) -> CIMultiDict[str]:
    """Headers to pass on: the hop-by-hop ones (and those `Connection` names) dropped."""
    named = {h.strip().lower() for h in given.get("Connection", "").split(",")}
    return CIMultiDict(
        (k, v) for k, v in given.items() if k.lower() not in HOP_BY_HOP | named | set(drop)
    )


def _client(app: web.Application) -> aiohttp.ClientSession:
    holder = app[CLIENT]
    if not holder:  # made on first use: inside the serving loop
        holder.append(
            aiohttp.ClientSession(
                auto_decompress=False,  # the bytes as the server sent them, encoding and all
                cookie_jar=aiohttp.DummyCookieJar(),  # one client for every caller: keep none
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                trust_env=False,
            )
        )
    return holder[0]


def _target(request: web.Request) -> URL | web.Response:
    raw = request.match_info["port"]
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        return problem(400, "INVALID_PORT", "port: must be 1..65535")
    parts = request.rel_url.raw_path.split("/", 3)  # "", "ports", port, the rest
    return URL.build(
        scheme="http",
        host="127.0.0.1",
        port=int(raw),
        path="/" + (parts[3] if len(parts) > 3 else ""),
        query_string=request.rel_url.raw_query_string,
        encoded=True,
    )


def _unreachable(url: URL, exc: Exception) -> web.Response:
    return problem(502, "PORT_UNREACHABLE", f"port: nothing answers on {url.port} ({exc})"[:300])


async def proxy(request: web.Request) -> web.StreamResponse:
    url = _target(request)
    if isinstance(url, web.Response):
        return url
    client = _client(request.app)
    activity = request.app[ACTIVITY]
    activity.note("port")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _bridge(request, client, url)
    headers = _headers(request.headers)
    headers.setdefault("X-Forwarded-Host", request.host)  # the relay's, when it came by one

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            activity.note("port")
            yield chunk

    has_body = request.body_exists
    try:
        upstream = await client.request(
            request.method,
            url,
            headers=headers,
            data=body() if has_body else None,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        return _unreachable(url, exc)
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(_headers(upstream.headers))
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                activity.note("port")  # a long answer (a stream, a download) while it lasts
                await response.write(chunk)
        except (aiohttp.ClientError, OSError):  # the server stopped mid-answer: so do we
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
    return response


async def _bridge(
    request: web.Request, client: aiohttp.ClientSession, url: URL
) -> web.StreamResponse:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    protocols = [p.strip() for p in offered.split(",") if p.strip()]
    try:
        upstream = await client.ws_connect(
            url.with_scheme("ws"),
            protocols=protocols,
            headers=_headers(request.headers, WS_HANDSHAKE),
            max_msg_size=MAX_FRAME,
            autoping=True,
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        return problem(
            status, "WEBSOCKET_REFUSED", f"port: the server refused the upgrade ({exc.status})"
        )
    except (aiohttp.ClientConnectionError, OSError) as exc:
        return _unreachable(url, exc)
    async with upstream:
        chosen = (upstream.protocol,) if upstream.protocol else ()
        ws = await websockets.accept(request, protocols=chosen, max_msg_size=MAX_FRAME)
        activity = request.app[ACTIVITY]
        directions = [
            asyncio.ensure_future(_copy(upstream, ws, activity)),
            asyncio.ensure_future(_copy(ws, upstream, activity)),
        ]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in directions:
                task.cancel()
        code = upstream.close_code or ws.close_code or 1000
        await ws.close(code=code)
        await upstream.close(code=ws.close_code or 1000)
    return ws


async def _copy(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    activity: Activity,
) -> None:
    async for msg in source:  # (pings are answered by aiohttp: never seen here, never noted)
        activity.note("port")
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)


def setup(app: web.Application, activity: Activity | None = None) -> None:
    app[CLIENT] = []
    app[ACTIVITY] = activity or Activity()

    async def close(app: web.Application) -> None:
        for client in app[CLIENT]:
            await client.close()

    app.router.add_route("*", "/ports/{port}", proxy)
    app.router.add_route("*", "/ports/{port}/{tail:.*}", proxy)
    app.on_cleanup.append(close)
