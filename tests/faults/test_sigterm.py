"""SIGTERM to a busy origin, as Cloud Run stops an instance (SIGKILL follows 10 s later):
`tether up` holding 200 relayed and served WebSockets and 50 commands in flight. Every
WebSocket client gets a close frame with 1001 (going away), every request its whole answer
(its result, or a 503 in its surface's shape), new connections are refused, and the process
exits with status 0 within the 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.origin.server import Origin
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

SESSIONS = 4
LOGS, TERMINALS, SHELLS = 190, 5, 5  # 200 WebSockets: live logs and terminals relayed as bytes,
# OnMemOS shells served by the origin's own handler
REQUESTS = 50
SLEEP = 5  # seconds each command runs: all 50 are under way when the signal comes
EXIT_WITHIN = 10.0  # Cloud Run's grace between SIGTERM and SIGKILL
GOING_AWAY = 1001


def enough_descriptors(needed: int) -> None:
    """Room for this test's sockets, and for the server's (it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    enough_descriptors(8192)
    srv = start_server(tmp_path / "home", {"TETHER_MAX_CONNECTIONS_PER_CLIENT": "1000"})
    yield srv
    srv.stop()


def running(marker: str) -> int:
    """How many of the test's commands are running now (their `sleep`, seen in /proc)."""
    wanted = f"sleep\0{marker}\0".encode()
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                count += Path(f"/proc/{pid}/cmdline").read_bytes() == wanted
    return count


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


async def open_all(urls: Iterable[str], key: str) -> list[ClientConnection]:
    gate = asyncio.Semaphore(20)

    async def one(url: str) -> ClientConnection:
        async with gate:
            # The client never pings: what closes it is the server's doing.
            return await connect(url, additional_headers={"X-API-Key": key}, ping_interval=None,
                                 open_timeout=60)  # fmt: skip

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def closed_with(ws: ClientConnection) -> tuple[int | None, float]:
    """The code of the close frame the server sent (None: none came), and when it ended."""
    await ws.wait_closed()
    received = ws.protocol.close_rcvd
    return (received.code if received is not None else None), time.monotonic()


async def execute(client: httpx.AsyncClient, session: str, command: str) -> tuple[int, Any]:
    answer = await client.post(f"/v1/sessions/{session}/execute",
                               json={"command": command, "timeout": 60})  # fmt: skip
    return answer.status_code, answer.json()


def test_sigterm_drains_websockets_and_requests_and_exits_within_10s(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    marker = f"{SLEEP}.{random.randrange(1000, 9999)}"  # this run's commands: `sleep 5.xxxx`

    async def main() -> dict[str, Any]:
        headers = {"X-API-Key": server.key}
        limits = httpx.Limits(max_connections=REQUESTS + 10)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60,
                                     limits=limits) as api:  # fmt: skip
            made = await asyncio.gather(*(api.post("/v1/sessions", json={"template": "shell"})
                                          for _ in range(SESSIONS)))  # fmt: skip
            sessions = [m.json()["id"] for m in made]
            assert {m.json()["status"] for m in made} == {"running"}
            ws = server.url.replace("http", "ws", 1)
            urls = [f"{ws}/api/v1/sessions/{sessions[n % SESSIONS]}/logs?follow=true"
                    for n in range(LOGS)]  # fmt: skip
            urls += [f"{ws}/v1/sessions/{sessions[n % SESSIONS]}/{kind}"
                     for kind, count in (("terminal", TERMINALS), ("shell", SHELLS))
                     for n in range(count)]  # fmt: skip
            sockets = await open_all(urls, server.key)
            closes = [asyncio.ensure_future(closed_with(s)) for s in sockets]

            commands = [asyncio.ensure_future(execute(api, sessions[n % SESSIONS],
                                                      f"sleep {marker}; echo done-{n}"))
                        for n in range(REQUESTS)]  # fmt: skip
            loop = asyncio.get_running_loop()
            all_running = await loop.run_in_executor(
                None, lambda: wait_for(lambda: running(marker) == REQUESTS, timeout=SLEEP - 1)
            )
            assert all_running, f"only {running(marker)} of {REQUESTS} commands ran at once"

            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            exit_code = loop.run_in_executor(None, server.proc.wait, EXIT_WITHIN + 20)

            await asyncio.wait(closes, return_when=asyncio.FIRST_COMPLETED)
            # The listening socket is closed before the first close frame goes out.
            refused_while_draining = await loop.run_in_executor(None, refused, port)
            still_running = server.proc.poll() is None
            closed = await asyncio.gather(*closes)
            answers = await asyncio.gather(*commands, return_exceptions=True)
            answered = time.monotonic()
            code = await exit_code
            exited = time.monotonic()
        return {
            "signalled": signalled,
            "closed": closed,
            "refused": refused_while_draining,
            "refused_during_drain": still_running,
            "answers": answers,
            "answered": answered,
            "code": code,
            "exited": exited,
        }

    got = asyncio.run(asyncio.wait_for(main(), 50))
    signalled = got["signalled"]
    codes = [code for code, _ in got["closed"]]
    assert codes == [GOING_AWAY] * len(codes), {c: codes.count(c) for c in set(codes)}
    assert got["refused"] and got["refused_during_drain"], "a new connection was taken"
    for n, answer in enumerate(got["answers"]):
        assert not isinstance(answer, BaseException), f"request {n}: {answer!r}"
        status, body = answer
        if status == 200:
            assert body["stdout"] == f"done-{n}\n" and body["returncode"] == 0, body
        else:  # too long for the drain: refused whole, in OnMemOS's shape
            assert status == 503 and body["detail"] and body["request_id"], (status, body)
    assert got["code"] == 0
    took = got["exited"] - signalled
    assert took <= EXIT_WITHIN, f"exited {took:.1f}s after SIGTERM"
    results = sum(1 for a in got["answers"] if a[0] == 200)
    print(f"\nSIGTERM: {len(codes)} WebSockets closed 1001 within "
          f"{max(t for _, t in got['closed']) - signalled:.2f}s, {results}/{REQUESTS} commands "
          f"answered with their result within {got['answered'] - signalled:.2f}s, "
          f"exit 0 after {took:.2f}s")  # fmt: skip


def test_a_request_still_running_at_the_deadline_gets_a_503_in_its_surfaces_shape() -> None:
    called, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.set()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"late": true}']

    origin = Origin(slow, drain=0.5)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    answer: list[httpx.Response] = []
    try:
        asyncio.run_coroutine_threadsafe(origin.start("127.0.0.1", 0), loop).result(10)
        url = f"http://127.0.0.1:{origin.port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            asking = threading.Thread(target=lambda: answer.append(
                client.post("/v1/sessions/ws-1/execute", json={"command": "sleep 60"})
            ))  # fmt: skip
            asking.start()
            assert called.wait(10)
            began = time.monotonic()
            asyncio.run_coroutine_threadsafe(origin.drain(), loop).result(10)
            drained = time.monotonic() - began
            asking.join(10)
            assert refused(origin.port)
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(origin.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    (response,) = answer
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["Connection"] == "close"
    body = json.loads(response.content)  # OnMemOS's shape: the path is its
    assert body["detail"] == "The server is stopping; try again"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert 0.5 <= drained < 3
