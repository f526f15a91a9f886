"""A Tether desktop workspace driven as an Openctrol desktop: the same calls as a desktop
agent's (the Home Assistant integration's, Kaando2000/openctrol at 447234106f67:
`homeassistant/custom_components/openctrol/api.py`, `ws.py`), at `/openctrol/<session id>`.
The workspace is a real one (sandboxed, Xvfb and a window manager inside); its runtime
streams its own display, and what lands in it is read back with xdotool inside it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.desktop.test_openctrol_desktop import HA, TIMEOUT, near, parse_frame
from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

PASSWORD = "openctrol-workspace"
COLOUR = (0x33, 0x66, 0x99)
WIDTH, HEIGHT = 640, 480


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """`tether up`, a light desktop template (a solid colour), and a running session of it."""
    from tether.core.models import Vnc
    from tether.service.templates import desktop_command

    server = start_server(
        tmp_path_factory.mktemp("oc-workspace") / "home", {"TETHER_ADMIN_PASSWORD": PASSWORD}
    )
    try:
        login = httpx.post(f"{server.url}/api/v1/auth/login",
                           json={"username": "admin", "password": PASSWORD})  # fmt: skip
        jwt = {"Authorization": f"Bearer {login.json()['token']}"}
        vnc = Vnc(enabled=True, resolution=f"{WIDTH}x{HEIGHT}")
        template = {
            "name": "oc-desktop",
            "display_name": "Openctrol desktop",
            "vnc": vnc.model_dump(),
            "command": desktop_command(vnc, "xsetroot -solid '#336699'; sleep infinity"),
        }
        made = httpx.post(f"{server.url}/api/v1/templates", json=template, headers=jwt)
        assert made.status_code == 201, made.text
        created = httpx.post(
            f"{server.url}/v1/sessions",
            json={"template": "oc-desktop"},
            headers={"X-API-Key": server.key},
            timeout=180,
        )
        assert created.status_code in (200, 201), created.text
        yield server, created.json()["id"]
    finally:
        server.stop()


def _in_workspace(server: Server, session_id: str, command: str) -> str:
    r = httpx.post(
        f"{server.url}/v1/sessions/{session_id}/execute",
        json={"command": f"DISPLAY=:$(cat ~/.tether/display) {command}", "timeout": 30},
        headers={"X-API-Key": server.key},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["stdout"])


def _pointer(server: Server, session_id: str) -> tuple[int, int]:
    said = _in_workspace(server, session_id, "xdotool getmouselocation")  # x:1 y:2 screen:0 ...
    fields = dict(kv.split(":", 1) for kv in said.split())
    return int(fields["x"]), int(fields["y"])


def test_a_desktop_workspace_is_an_openctrol_desktop(workspace: tuple[Server, str]) -> None:
    server, session_id = workspace
    port = server.url.rsplit(":", 1)[1]
    base = f"{server.url}/openctrol/{session_id}:{port}"  # as the integration builds it

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            client = HA(http, base, server.key)
            async with http.get(f"{base}/api/v1/health", timeout=TIMEOUT) as r:
                assert r.status == 200
                health = await r.json()
            assert health["agent_id"] == session_id
            assert health["remote_desktop"]["is_running"] is True
            monitors = await client.get("/api/v1/rd/monitors")
            assert [(m["width"], m["height"]) for m in monitors["monitors"]] == [(WIDTH, HEIGHT)]
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            hello = await ws.receive_json(timeout=30)
            assert hello["type"] == "hello" and hello["monitors"][0]["width"] == WIDTH
            async with asyncio.timeout(60):  # its own display, its own colour
                while True:
                    msg = await ws.receive()
                    assert (
                        msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT
                    )
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        width, height, fmt, image = parse_frame(msg.data)
                        assert (width, height, fmt) == (WIDTH, HEIGHT, 1)
                        if near(image.getpixel((5, 5)), COLOUR):
                            break
            await ws.send_str(json.dumps({"type": "pointer_move", "x": 32768, "y": 32768,
                                          "absolute": True}))  # fmt: skip
            centre = (round(32768 * (WIDTH - 1) / 65535), round(32768 * (HEIGHT - 1) / 65535))
            assert await asyncio.to_thread(
                wait_for, lambda: _pointer(server, session_id) == centre, 30
            )
            # Ending the session closes its viewer, as an agent's would.
            await client.post(f"/api/v1/sessions/desktop/{made['session_id']}/end")
            msg = await ws.receive(timeout=30)
            while msg.type is not aiohttp.WSMsgType.CLOSE:
                msg = await ws.receive(timeout=30)
            assert (msg.data, msg.extra) == (1000, "Session ended")

    asyncio.run(run())


def test_a_desktop_workspace_has_its_own_sound_server(workspace: tuple[Server, str]) -> None:
    """Its applications' device, set as the integration sets a PC's; checked with pactl in it."""
    server, session_id = workspace
    base = f"{server.url}/openctrol/{session_id}"
    pulse = 'PULSE_SERVER="unix:$HOME/.tether/pulse" pactl'

    def inside(command: str) -> str:
        r = httpx.post(f"{server.url}/v1/sessions/{session_id}/execute",
                       json={"command": f"{pulse} {command}", "timeout": 30},
                       headers={"X-API-Key": server.key}, timeout=60)  # fmt: skip
        return str(r.json()["stdout"])

    assert wait_for(lambda: "speakers" in inside("list short sinks"), 60)

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            client = HA(http, base, server.key)
            status = await client.get("/api/v1/audio/status")
            assert [(d["id"], d["is_default"]) for d in status["devices"]] == [("speakers", True)]
            await client.post("/api/v1/audio/master", {"volume": 40.0})
            await client.post("/api/v1/audio/device", {"DeviceId": "speakers", "Muted": True})
            headers = {"X-Openctrol-Key": server.key}
            async with http.post(base + "/api/v1/audio/default", json={"DeviceId": "nope"},
                                 headers=headers, timeout=TIMEOUT) as r:  # fmt: skip
                assert r.status == 404 and (await r.json())["error"] == "not_found"

    asyncio.run(run())
    assert "26214" in inside("get-sink-volume speakers")  # 40 % of 65536
    assert "yes" in inside("get-sink-mute speakers")


def test_no_tunnel_may_take_a_workspace_s_id(workspace: tuple[Server, str]) -> None:
    """A desktop agent dialling in under a workspace's session id would get its viewers'
    input: refused before the upgrade, even with an admin's key."""
    server, session_id = workspace
    ws_url = server.url.replace("http", "ws", 1) + f"/openctrol/{session_id}/tunnel"

    async def dial() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {server.key}"})
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status
        return 101

    assert asyncio.run(dial()) == 403


def test_power_on_a_desktop_workspace_is_its_session(workspace: tuple[Server, str]) -> None:
    """Shutdown hibernates the workspace (its home kept); restart hibernates and wakes it."""
    server, session_id = workspace
    base = f"{server.url}/openctrol/{session_id}"

    def state() -> str:
        r = httpx.get(f"{server.url}/v1/sessions/{session_id}", headers={"X-API-Key": server.key})
        return str(r.json()["status"])

    async def power(action: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            return dict(await HA(http, base, server.key).post("/api/v1/power", {"action": action}))

    _in_workspace(server, session_id, "touch ~/kept")
    assert asyncio.run(power("restart")) == {"status": "ok", "action": "restart"}
    assert wait_for(lambda: state() == "running", 120)
    assert "kept" in _in_workspace(server, session_id, "ls ~")
    assert asyncio.run(power("shutdown"))["action"] == "shutdown"
    assert wait_for(lambda: state() in ("hibernated", "stopped"), 120), state()
