"""Idle detection that counts real work, against `tether up`: a background process, a long
exec or typing in a terminal keeps a session with an idle timeout running, and shows as what
kept it; a terminal left open at its prompt does not. (The sweep runs every 2 s; the sessions'
idle timeout is 3 s. Activity the control plane saw itself, a call of the API, is recorded when
it happens; what the workspace did in between is found when the sweeper asks it, once the
session falls due.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

IDLE = 3  # seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("idle") / "home")
    yield srv
    srv.stop()


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        yield client


def running_session(api: httpx.Client) -> str:
    """A new session that hibernates after `IDLE` seconds without activity, once it runs."""
    made = api.post(
        "/api/v1/sessions", json={"user": "idler", "template": "python", "idleTimeout": f"{IDLE}s"}
    )
    assert made.status_code == 202, made.text
    sid = str(made.json()["id"])
    assert wait_for(lambda: info(api, sid)["status"] == "running", 60, 0.1), info(api, sid)
    return sid


def info(api: httpx.Client, sid: str) -> dict[str, Any]:
    """The session as OnMemOS shows it (reading it is no activity)."""
    r = api.get(f"/v1/sessions/{sid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def kept_by(api: httpx.Client, sid: str, source: str, since: str) -> bool:
    """Whether the session, still running, shows activity of `source` found after `since`
    (which only the idle check, once the session was due, records)."""
    now = info(api, sid)
    assert now["status"] == "running", now  # never hibernated meanwhile
    later = datetime.fromisoformat(now["last_activity_at"]) > datetime.fromisoformat(since)
    return bool(now["last_activity_source"] == source and later)


def hibernates(api: httpx.Client, sid: str) -> bool:
    return wait_for(lambda: info(api, sid)["status"] == "hibernated", 6 * IDLE, 0.2)


def test_a_background_process_keeps_it_running_until_it_is_killed(api: httpx.Client) -> None:
    sid = running_session(api)
    started = api.post(f"/v1/sessions/{sid}/processes", json={"command": "sleep 60"})
    assert started.status_code == 201, started.text
    since = info(api, sid)["last_activity_at"]  # the start's own call: the last one made
    assert wait_for(lambda: kept_by(api, sid, "process", since), 6 * IDLE, 0.2), info(api, sid)
    # Nor was it warned of going idle: its workspace was asked first, and was at work.
    assert api.get(f"/v1/sessions/{sid}/events").json()["events"] == []
    pid = started.json()["pid"]
    assert api.post(f"/v1/sessions/{sid}/processes/{pid}/kill", json={}).status_code == 200
    assert hibernates(api, sid), info(api, sid)


def test_a_long_exec_keeps_it_running_until_it_ends(api: httpx.Client, server: Server) -> None:
    sid = running_session(api)
    waits = "while [ ! -e go ]; do sleep 0.05; done; echo went"  # until the test says go
    body = {"command": waits, "timeout": 120, "async_execution": True}
    submitted = api.post(f"/v1/sessions/{sid}/execute", json=body)
    assert submitted.status_code in (200, 202), submitted.text
    since = info(api, sid)["last_activity_at"]
    assert wait_for(lambda: kept_by(api, sid, "exec", since), 6 * IDLE, 0.2), info(api, sid)
    put = api.put(f"/v1/sessions/{sid}/files/content", params={"path": "go"}, content=b"")
    assert put.status_code == 201, put.text
    assert hibernates(api, sid), info(api, sid)


def test_typing_in_a_terminal_keeps_it_running_and_an_idle_prompt_does_not(
    api: httpx.Client, server: Server
) -> None:
    sid = running_session(api)
    url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/terminal"

    async def scenario() -> tuple[bool, bool, bool]:
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(url, headers={"X-API-Key": server.key}) as ws,
        ):
            since = info(api, sid)["last_activity_at"]
            kept = False
            for _ in range(int(12 * IDLE)):  # a key every 0.5 s: until the check has seen it
                await ws.send_bytes(b"x")
                await asyncio.sleep(0.5)
                if await asyncio.to_thread(kept_by, api, sid, "terminal", since):
                    kept = True
                    break
            await ws.send_bytes(b"\x15")  # ^U: the line is cleared; from here on, the prompt
            # Left open at the prompt: the session idles out under it, and the relay ends it.
            slept = await asyncio.to_thread(hibernates, api, sid)
            async with asyncio.timeout(30):
                async for _ in ws:  # its output until the relay closes it
                    pass
            return kept, slept, ws.closed

    kept, slept, closed = asyncio.run(scenario())
    assert kept, info(api, sid)
    assert slept, info(api, sid)
    assert closed  # with its session
