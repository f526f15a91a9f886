"""Requests a second: `GET /v1/sessions/{id}` (a store read and a credential check) on
`tether up` with one serving process and with `--workers 2`, at 1, 8 and 32 connections, next
to a trivial app (a constant JSON answer) on the same server, measured in the same run. The
load comes from this process (aiohttp's client) on the same 2-core machine, so the figures are
what one machine does, client included. Prints figures; asserts only correctness.

Goal (issue 15): more processes serve more requests a second than one, up to the cores.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, free_port, start_server

SECONDS = float(os.environ.get("TETHER_BENCH_LOAD_SECONDS", "2"))
CONNECTIONS = (1, 8, 32)
TRIVIAL = """
import asyncio, sys
from tether.origin.server import Origin

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']

asyncio.run(Origin(app=app).serve("127.0.0.1", int(sys.argv[1])))
"""


async def load(url: str, headers: dict[str, str], connections: int) -> float:
    """Requests a second over `connections` keep-alive connections for SECONDS."""
    done = 0
    deadline = time.monotonic() + SECONDS
    limit = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=limit, headers=headers) as http:

        async def one_connection() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with http.get(url) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        return done / (time.monotonic() - started)


@pytest.fixture
def trivial() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", TRIVIAL, str(port)])
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and proc.poll() is None, "trivial app down"
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def session_url(server: Server) -> str:
    h = {"X-API-Key": server.key}
    sid = httpx.post(f"{server.url}/v1/sessions", json={"template": "shell"}, headers=h,
                     timeout=60).json()["id"]  # fmt: skip
    return f"{server.url}/v1/sessions/{sid}"


@pytest.mark.timeout(600)
def test_requests_a_second(
    tmp_path: Path, trivial: str, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = {"TETHER_RATE_LIMITS": "api=100000000"}
    one = start_server(tmp_path / "one", quiet)
    two = start_server(tmp_path / "two", {**quiet, "TETHER_WORKERS": "2"})
    rows: dict[int, dict[str, float]] = {}
    try:
        targets = {
            "trivial app": (trivial, {}),
            "1 process": (session_url(one), {"X-API-Key": one.key}),
            "--workers 2": (session_url(two), {"X-API-Key": two.key}),
        }
        for n in CONNECTIONS:
            rows[n] = {name: asyncio.run(load(url, h, n)) for name, (url, h) in targets.items()}
    finally:
        one.stop()
        two.stop()
    with capsys.disabled():
        print(f"\n\nGET a session by id, requests a second over {SECONDS:g} s each")
        for n, row in rows.items():
            base = row["trivial app"]
            cells = "  ".join(f"{name} {rps:7.0f} ({rps / base:.2f}x)" for name, rps in row.items())
            print(f"  {n:>2} connections: {cells}")
        print()
