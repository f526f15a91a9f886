"""`tether up --workers 2`: two processes serve one port; whichever takes a connection, a
caller sees one Tether — its sessions, commands, idempotent creates, rate limits and
terminals."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("workers") / "home"
    s = start_server(home, {"TETHER_WORKERS": "2", "TETHER_RATE_LIMITS": "login=3"})
    yield s
    s.stop()


def fresh(server: Server) -> httpx.Client:
    """A client of its own: a new connection, which either process may take."""
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60)


def workers_of(server: Server) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"tether.origin.worker" in cmdline and int(stat[1]) == server.proc.pid:
            found.append(int(pid))
    return found


def test_both_processes_serve_one_tether(server: Server) -> None:
    assert len(workers_of(server)) == 1  # beside the first process
    with fresh(server) as c:
        sid = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]
    for i in range(12):  # each on a new connection: both processes answer some
        with fresh(server) as c:
            ran = c.post(f"/v1/sessions/{sid}/execute", json={"command": f"echo {i}"}).json()
            assert ran["stdout"] == f"{i}\n", ran
            assert c.get(f"/v1/sessions/{sid}").json()["status"] == "running"
    ids = set()
    for _ in range(6):  # one Idempotency-Key: one session, whoever answers
        with fresh(server) as c:
            r = c.post("/v1/sessions", json={"template": "shell"},
                       headers={"Idempotency-Key": "workers-once"})  # fmt: skip
            ids.add(r.json()["id"])
    assert len(ids) == 1
    with fresh(server) as c:
        c.delete(f"/v1/sessions/{sid}")
        assert c.get(f"/v1/sessions/{sid}").json()["status"] == "terminated"


def test_a_rate_limit_holds_across_the_processes(
    server: Server, rate_window: Callable[[], None]
) -> None:
    rate_window()
    codes = []
    for _ in range(5):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            body = {"username": "nobody", "password": "wrong"}
            codes.append(c.post("/api/v1/auth/login", json=body).status_code)
    assert codes == [401, 401, 401, 429, 429]


def test_terminals_open_through_either_process(server: Server) -> None:
    with fresh(server) as c:
        sid = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]

    async def echo(n: int) -> bytes:
        url = server.url.replace("http", "ws", 1) + f"/v1/sessions/{sid}/terminal"
        headers = {"X-API-Key": server.key}
        async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
            await ws.send_bytes(f"echo term-$((40+{n}))\n".encode())
            seen = b""
            while f"term-{40 + n}\r\n".encode() not in seen:
                msg = await ws.receive(timeout=30)
                assert msg.type is aiohttp.WSMsgType.BINARY, msg
                seen += msg.data
            return seen

    async def main() -> list[bytes]:
        return await asyncio.gather(*(echo(n) for n in range(6)))

    assert len(asyncio.run(main())) == 6
    with fresh(server) as c:
        c.delete(f"/v1/sessions/{sid}")


def test_the_other_processes_end_with_the_first_however_it_ends(tmp_path: Path) -> None:
    s = start_server(tmp_path / "home", {"TETHER_WORKERS": "2"})
    try:
        (worker,) = workers_of(s)
        s.proc.kill()  # no chance to stop them itself
        s.proc.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and not zombie(worker):
            assert time.monotonic() < deadline, "the worker outlived the first process"
            time.sleep(0.05)
    finally:
        s.stop()


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
