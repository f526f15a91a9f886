"""The local origin's one port, as clients meet it: plain requests on keep-alive connections,
WebSocket upgrades on the same connections, and the HTTP corners curl and browsers use."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from tether import deferred
from tether.origin.server import Origin

from tests.bodies import sans_id
from tests.e2e.conftest import Server, serving, start_server
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("origin") / "home")
    yield srv
    srv.stop()


def raw(server: Server, data: bytes, then: bytes = b"") -> tuple[bytes, bytes]:
    """Sends `data`; reads the first answer (e.g. `100 Continue`), sends `then`, reads to EOF."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        first = sock.recv(65536)
        if then:
            sock.sendall(then)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    return first, rest


def test_a_websocket_upgrade_on_a_connection_that_served_requests(server: Server) -> None:
    async def go() -> str:
        # One connection in the pool: the upgrade reuses the one the POST used.
        connector = aiohttp.TCPConnector(limit=1)
        headers = {"X-API-Key": server.key}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
            created = await client.post(f"{server.url}/v1/sessions", json={"template": "shell"})
            sid = (await created.json())["id"]
            url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/shell"
            async with client.ws_connect(url) as ws:
                await ws.send_json({"type": "command", "command": "echo over-the-relay"})
                answer = await ws.receive_json(timeout=30)
            await client.delete(f"{server.url}/v1/sessions/{sid}")
        return str(answer["stdout"])

    assert asyncio.run(go()).strip() == "over-the-relay"


def test_a_client_waiting_for_100_continue_is_not_kept_waiting(server: Server) -> None:
    body = json.dumps({"template": "no-such-template", "namespace": "x" * 2000}).encode()
    head = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nX-API-Key: {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    first, rest = raw(server, head, body)
    assert first.startswith(b"HTTP/1.1 100 ")
    assert time.monotonic() - started < 0.9  # curl waits 1 s for a 100 before sending anyway
    status_line, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.split(b" ")[1] in (b"400", b"404", b"422")
    assert "detail" in json.loads(payload)


def test_a_chunked_body_is_read(server: Server) -> None:
    body = json.dumps({"template": "shell"}).encode()
    head = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nX-API-Key: {server.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    first, rest = raw(server, head + chunked)
    answer = first + rest
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["status"] == "running"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: many\r\n\r\n", b"400"),
        (b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n", b"413"),
    ],
    ids=["request-line", "content-length", "too-large"],
)
def test_malformed_requests_get_a_clear_error(
    server: Server, request_bytes: bytes, status: bytes
) -> None:
    first, rest = raw(server, request_bytes)
    answer = first + rest
    assert answer.split(b" ")[1] == status, answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]


def test_a_path_nobody_serves_is_a_404_in_the_api_shape(server: Server) -> None:
    first, rest = raw(server, b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    answer = first + rest
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert sans_id(json.loads(answer.partition(b"\r\n\r\n")[2])) == {"detail": "Not Found"}


def test_an_upgrade_to_http2_is_answered_in_http11(server: Server) -> None:
    """curl --http2 on plain http asks to upgrade to h2c; the answer comes in HTTP/1.1."""
    headers = {
        "Connection": "Upgrade, HTTP2-Settings",
        "Upgrade": "h2c",
        "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
    }
    answer = httpx.get(f"{server.url}/health", headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.http_version == "HTTP/1.1"
    assert answer.json()["status"] in ("healthy", "degraded")


def test_connections_beyond_the_limit_get_a_503_until_one_closes(tmp_path: Path) -> None:
    busy = start_server(tmp_path / "home", {"TETHER_MAX_CONNECTIONS": "3"})
    port = int(busy.url.rsplit(":", 1)[1])
    try:
        held = [httpx.Client(base_url=busy.url, timeout=10) for _ in range(3)]
        for client in held:  # each holds a kept-alive connection once answered
            assert client.get("/health").status_code == 200
        over = socket.create_connection(("127.0.0.1", port), timeout=10)
        answer = b""
        while chunk := over.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert "Too many connections" in json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]
        held.pop().close()
        assert wait_for(lambda: _health(busy.url) == 200)
        for client in held:
            client.close()
    finally:
        busy.stop()


def _health(url: str) -> int:
    try:
        return httpx.get(f"{url}/health", timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_work_a_handler_defers_runs_after_its_answer_is_sent() -> None:
    answered = threading.Event()  # set once the client holds the answer
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        n = environ["PATH_INFO"]
        deferred.later(lambda: ran.append(f"{n} after the answer: {answered.wait(5)}"))
        deferred.later(lambda: 1 / 0)  # logged; the work after it runs all the same
        deferred.later(lambda: ran.append(f"{n} done"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    origin = Origin(app=app)
    with serving(origin) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/v1/sessions/one").text == "ok"
        answered.set()
        assert client.get("/v1/sessions/two").text == "ok"  # the same connection goes on
    assert ran == [
        "/v1/sessions/one after the answer: True",
        "/v1/sessions/one done",
        "/v1/sessions/two after the answer: True",
        "/v1/sessions/two done",
    ]
