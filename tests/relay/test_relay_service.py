"""The relay as its own service (`python -m tether.relay`, as on Cloud Run): a separate process
that shares only the Store with the control plane, and still reaches the session's runtime."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, free_port, start_server
from tests.relay.test_relay import read_until, refused_status


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("relay-service") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def relay(control_plane: Server) -> Iterator[str]:
    port = free_port()
    env = {**control_plane.env, "PORT": str(port)}
    env.pop("TETHER_PORT")
    proc = subprocess.Popen([sys.executable, "-m", "tether.relay"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "relay did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_relay_service_opens_a_terminal_of_a_session_it_did_not_start(
    control_plane: Server, relay: str
) -> None:
    headers = {"X-API-Key": control_plane.key}
    created = httpx.post(f"{control_plane.url}/v1/sessions", json={"template": "shell"},
                         headers=headers, timeout=60).json()  # fmt: skip
    assert created["status"] == "running"
    url = relay.replace("http", "ws", 1) + f"/v1/sessions/{created['id']}/terminal"

    async def main() -> bytes:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, headers=headers)
            await ws.send_bytes(b"echo relayed-$((6*7))\n")
            seen = await read_until(ws, b"relayed-42")
            await ws.close()
            return seen

    assert b"relayed-42" in asyncio.run(main())
    # Checked before the upgrade there too: no credential, nothing relayed.
    assert asyncio.run(refused_status(url)) == 401
