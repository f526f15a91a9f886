"""The SDK sends an Idempotency-Key with every create and the same one again when it retries a
create whose answer was lost; a request that cannot be repeated safely is not retried. Against
a real HTTP server on loopback that drops the first answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from tether.sdk.aio import AsyncClient
from tether.sdk.client import Client

from tests.e2e.conftest import free_port
from tests.waiting import wait_for


class Flaky:
    """Answers each path's first request by dropping the connection, the rest normally."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            (f"{request.method} {request.path}", request.headers.get("Idempotency-Key"))
        )
        if sum(1 for s, _ in self.seen if s == self.seen[-1][0]) == 1:
            assert request.transport is not None
            request.transport.close()  # the request arrived; its answer is lost
            raise web.HTTPInternalServerError
        return web.json_response({"id": "ws-1", "status": "running"}, status=201)


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    server = Flaky()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/up", timeout=1).status_code in (201, 500)
        except httpx.TransportError:
            return False

    assert wait_for(up)
    server.seen.clear()
    yield server, url
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_a_create_whose_answer_was_lost_is_sent_again_with_its_key(
    flaky: tuple[Flaky, str],
) -> None:
    server, url = flaky
    with Client(url, api_key="k") as client:
        assert client.create_session(template="shell")["id"] == "ws-1"
    (first, key), (again, same) = server.seen
    assert first == again == "POST /v1/sessions"
    assert key and key == same


def test_the_async_client_does_alike(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky

    async def go() -> dict[str, Any]:
        async with AsyncClient(url, api_key="k") as client:
            return await client.create_session(template="shell")

    assert asyncio.run(go())["id"] == "ws-1"
    assert len({key for _, key in server.seen}) == 1 and len(server.seen) == 2


def test_an_execute_is_never_sent_twice(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    with Client(url, api_key="k") as client, pytest.raises(httpx.TransportError):
        client.execute_session("ws-1", "echo once")
    assert [s for s, _ in server.seen] == ["POST /v1/sessions/ws-1/execute"]
