"""Ports on the real runtime app: HTTP and WebSockets passed to a real server on loopback,
streamed both ways, and the documented answers when there is no such server or port."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import WSMsgType, web
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fakes.loopback import LoopbackApp
from tests.fakes.runtime import RuntimeServer

TOKEN = "runtime-secret"
AUTH = {"X-Tether-Runtime-Token": TOKEN}


def workspace_server() -> web.Application:
    """What a workspace might serve on a port of its own."""
    released = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        answer = web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "sha256": hashlib.sha256(body).hexdigest(),
            },
            status=201 if request.method == "POST" else 200,
            headers={"X-Upstream": "yes"},
        )
        answer.set_cookie("a", "1")
        answer.set_cookie("b", "2")
        return answer

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await released.wait()
        await response.write(b"second\n")
        return response

    async def release(_: web.Request) -> web.Response:
        released.set()
        return web.Response(text="ok")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(protocols=("chat",))
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT and msg.data == "bye":
                await sock.close(code=4000, message=b"bye")
            elif msg.type is WSMsgType.TEXT:
                await sock.send_str("echo " + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/slow", slow)
    app.router.add_get("/release", release)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The runtime's URL and the port of the workspace's server."""
    upstream = LoopbackApp("workspace-server")
    port = int(upstream.start(workspace_server).rsplit(":", 1)[1])
    runtime = RuntimeServer(tmp_path / "home", token=TOKEN)
    runtime.start()
    yield runtime.url, port
    runtime.stop()
    upstream.stop()


def test_http_goes_through_both_ways(servers: tuple[str, int]) -> None:
    url, port = servers
    with httpx.Client(base_url=f"{url}/ports/{port}", headers=AUTH, timeout=20) as client:
        r = client.get("/some%20where/x?b=2&a=%2F", headers={"X-Mine": "kept"})
        assert r.status_code == 200 and r.headers["x-upstream"] == "yes"
        seen = r.json()
        assert seen["path"] == "/some%20where/x?b=2&a=%2F"  # encoded as sent
        assert seen["headers"]["X-Mine"] == "kept"
        assert "X-Tether-Runtime-Token" not in seen["headers"]  # the runtime's own, not passed
        assert sorted(c.name for c in client.cookies.jar) == ["a", "b"]
        body = b"0123456789abcdef" * (1 << 18)  # 4 MiB, sent in pieces
        r = client.post("/upload", content=iter([body[: 1 << 21], body[1 << 21 :]]))
        assert r.status_code == 201
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
        assert client.get("").json()["path"] == "/"


def test_an_answer_streams_as_the_server_writes_it(servers: tuple[str, int]) -> None:
    url, port = servers
    with (
        httpx.Client(base_url=f"{url}/ports/{port}", headers=AUTH, timeout=20) as client,
        client.stream("GET", "/slow") as r,
    ):
        lines = r.iter_lines()
        assert next(lines) == "first"  # while the server still holds its second line
        assert client.get("/release").text == "ok"
        assert next(lines) == "second"


def test_websockets_are_bridged(servers: tuple[str, int]) -> None:
    url, port = servers
    ws_url = url.replace("http", "ws") + f"/ports/{port}/ws"
    with connect(ws_url, additional_headers=AUTH, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv(10) == "echo hello"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(10) == b"\x03\x02\x01"
        ws.send("bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(10)
        assert ws.close_code == 4000  # the server's own close code, passed on


def test_nothing_listening_or_no_such_port(servers: tuple[str, int]) -> None:
    url, _ = servers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # free once closed
    r = httpx.get(f"{url}/ports/{free}/x", headers=AUTH)
    assert (r.status_code, r.json()["code"]) == (502, "PORT_UNREACHABLE")
    ws = httpx.get(f"{url}/ports/{free}/ws", headers={**AUTH, "Upgrade": "websocket",
                                                        "Connection": "Upgrade"})  # fmt: skip
    assert (ws.status_code, ws.json()["code"]) == (502, "PORT_UNREACHABLE")
    for bad in ("0", "65536", "http", "-1"):
        r = httpx.get(f"{url}/ports/{bad}/x", headers=AUTH)
        assert (r.status_code, r.json()["code"]) == (400, "INVALID_PORT"), bad
    assert httpx.get(f"{url}/ports/{free}/x").status_code == 401  # the runtime's token first
    assert json.loads(httpx.get(f"{url}/ports/{free}", headers=AUTH).text)["code"] == (
        "PORT_UNREACHABLE"
    )
