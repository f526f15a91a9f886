"""Openctrol end to end: `tether up`, a desktop agent in its own process on a real Xvfb (it
listens on no port: it dials the relay), and the calls the Home Assistant integration makes.

The client side follows Kaando2000/openctrol at 447234106f672a314f8015a4367ffc3f8c1d08a9:
`homeassistant/custom_components/openctrol/api.py` (REST: `X-Openctrol-Key`, PascalCase
bodies, `ClientTimeout(total=10)`, status exactly 200, `.json()`), `ws.py` (the session's
`websocket_url` opened with no headers, frames parsed as `OFRA` + three little-endian
unsigned ints, key combos as bare `key` messages without modifier flags, the same URL
reopened after a close) and `Agent/tools/api-tests/test_openctrol_comprehensive.py` (the
snake_case create, `ctrl: true` keys). The base URL is what the integration builds from a
host typed as `127.0.0.1:PORT/openctrol/AGENT` and its port: `.../openctrol/AGENT:PORT`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from PIL import Image
from Xlib import XK, X, display

from tests.conftest import emulator
from tests.desktop.conftest import HEIGHT, WIDTH, Recorder
from tests.desktop.pulse import HEADPHONES, SPEAKERS, raw_volumes
from tests.desktop.pulse import Server as PulseServer
from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

AGENT = "pc1"
TIMEOUT = aiohttp.ClientTimeout(total=10)  # api.py's, on every call
RED, BLUE = (255, 0, 0), (0, 0, 255)


@dataclass
class Desktop:
    server: Server
    display: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:  # what api.py builds from host=127.0.0.1:PORT/openctrol/pc1, port
        port = self.server.url.rsplit(":", 1)[1]
        return f"{self.server.url}/openctrol/{AGENT}:{port}"

    def start_agent(self) -> None:
        log = (self.server.home.parent / "desktop-agent.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.agent"], env=self.env, stdout=log, stderr=log
        )

    def stop_agent(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _root(xvfb: str, colour: tuple[int, int, int]) -> None:
    """A real X client paints the root window (`xsetroot`, the desktops' own tool)."""
    subprocess.run(
        ["xsetroot", "-display", xvfb, "-solid", "#{:02x}{:02x}{:02x}".format(*colour)], check=True
    )


@pytest.fixture(scope="module", params=["embedded", "cloud"])
def desktop(
    request: pytest.FixtureRequest,
    xvfb: str,
    pulse: PulseServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Desktop]:
    """The stack and the agent share the store and a SQLite bus, as processes of one machine
    do; or Firestore and Pub/Sub (the emulators), as in the cloud."""
    home = tmp_path_factory.mktemp("openctrol") / "home"
    backends = {"TETHER_BUS": "sqlite"}
    if request.param == "cloud":
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        backends = {"TETHER_STORE": "firestore", "TETHER_BUS": "pubsub",
                    "GOOGLE_CLOUD_PROJECT": f"desk-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    shared = {
        **backends,
        "TETHER_OPENCTROL_HA_IDS": "home-assistant,test-script",
        "TETHER_OPENCTROL_MAX_SESSIONS": "50",  # each test opens its own
    }
    server = start_server(home, shared)
    env = {
        **server.env,
        "TETHER_PLATFORM": "desktop",
        "TETHER_AGENT_ID": AGENT,
        "TETHER_PUBLIC_URL": server.url,
        "DISPLAY": xvfb,
        "PULSE_SERVER": pulse.address,
        # Power on a host runs what its owner configured: here, a harmless marker.
        "TETHER_DESKTOP_SHUTDOWN_COMMAND": f"touch {home.parent / 'shut-down'}",
        "TETHER_DESKTOP_FPS": "20",
    }
    env.pop("PORT", None)
    _root(xvfb, RED)
    d = Desktop(server, xvfb, env)
    d.start_agent()
    try:
        assert wait_for(lambda: asyncio.run(_running(d)), 60), "the desktop agent never came up"
        yield d
    finally:
        d.stop_agent()
        server.stop()


async def _running(d: Desktop) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{d.base}/api/v1/health", timeout=TIMEOUT) as r,
    ):
        return r.status == 200 and bool((await r.json())["remote_desktop"]["is_running"])


@asynccontextmanager
async def ha(d: Desktop) -> AsyncIterator[HA]:
    async with aiohttp.ClientSession() as http:
        yield HA(http, d.base, d.server.key)


@dataclass
class HA:
    """The integration's calls (api.py)."""

    http: aiohttp.ClientSession
    base: str
    key: str

    async def get(self, path: str) -> Any:
        headers = {"X-Openctrol-Key": self.key}
        async with self.http.get(self.base + path, headers=headers, timeout=TIMEOUT) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        headers = {"X-Openctrol-Key": self.key, "Content-Type": "application/json"}
        async with self.http.post(
            self.base + path, json=payload or {}, headers=headers, timeout=TIMEOUT
        ) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def session(self, ttl: int = 3600) -> dict[str, Any]:
        made = await self.post(
            "/api/v1/sessions/desktop", {"HaId": "home-assistant", "TtlSeconds": ttl}
        )
        assert made["websocket_url"].startswith("ws://")
        assert f"sess={made['session_id']}&token=" in made["websocket_url"]
        return dict(made)

    async def connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        with warnings.catch_warnings():  # ws.py passes a ClientTimeout, deprecated there
            warnings.simplefilter("ignore", DeprecationWarning)
            return await self.http.ws_connect(url, headers={}, timeout=aiohttp.ClientTimeout(30))


def parse_frame(data: bytes) -> tuple[int, int, int, Image.Image]:
    """As ws.py reads a frame: the magic, three little-endian unsigned ints, the JPEG."""
    assert len(data) >= 16 and data[:4] == b"OFRA"
    width, height, fmt = (struct.unpack("<I", data[i : i + 4])[0] for i in (4, 8, 12))
    return width, height, fmt, Image.open(io.BytesIO(data[16:])).convert("RGB")


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], slack: int = 40) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel, colour, strict=False))


async def frame_where(
    ws: aiohttp.ClientWebSocketResponse, ok: Any, timeout: float = 20
) -> Image.Image:
    """The first frame whose image satisfies `ok` (text messages are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT, msg
            if msg.type is aiohttp.WSMsgType.BINARY:
                width, height, fmt, image = parse_frame(msg.data)
                assert (width, height, fmt) == (WIDTH, HEIGHT, 1) == (*image.size, 1)
                if ok(image):
                    return image


async def text_where(ws: aiohttp.ClientWebSocketResponse, ok: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT and ok(json.loads(msg.data)):
                return dict(json.loads(msg.data))
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


def pointer(xvfb: str) -> tuple[int, int]:
    d = display.Display(xvfb)
    try:
        p = d.screen().root.query_pointer()
        return int(p.root_x), int(p.root_y)
    finally:
        d.close()


def test_health_and_monitors_as_the_integration_reads_them(desktop: Desktop) -> None:
    async def run() -> None:
        async with ha(desktop) as client:
            async with client.http.get(f"{desktop.base}/api/v1/health", timeout=TIMEOUT) as r:
                assert r.status == 200 and r.content_type == "application/json"
                health = await r.json()
            assert health["agent_id"] == AGENT
            rd = health["remote_desktop"]
            assert rd["is_running"] is True and rd["degraded"] is False
            assert rd["state"] == "desktop" and rd["last_frame_at"]
            monitors = await client.get("/api/v1/rd/monitors")
            (only,) = monitors["monitors"]
            assert (only["width"], only["height"], only["is_primary"]) == (WIDTH, HEIGHT, True)
            assert monitors["current_monitor_id"] == only["id"] == "DISPLAY1"
            chosen = await client.post("/api/v1/rd/monitor", {"MonitorId": only["id"]})
            assert chosen["status"] == "ok"

    asyncio.run(run())


def test_frames_show_the_screen_and_follow_its_changes(
    desktop: Desktop, recorder: Recorder
) -> None:
    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            hello = await ws.receive_json(timeout=10)  # the first message, before any frame
            assert hello["type"] == "hello" and hello["session_id"] == made["session_id"]
            assert hello["monitors"][0]["width"] == WIDTH
            # A static screen still gives a first frame: the root is red, the window white.
            await frame_where(ws, lambda im: near(im.getpixel((20, 20)), RED)
                              and near(im.getpixel((300, 250)), (255, 255, 255)))  # fmt: skip
            _root(desktop.display, BLUE)
            await frame_where(ws, lambda im: near(im.getpixel((20, 20)), BLUE))
            await ws.close()
            _root(desktop.display, RED)

    asyncio.run(run())


def test_input_lands_where_the_x_server_sees_it(desktop: Desktop, recorder: Recorder) -> None:
    ctrl, a = XK.string_to_keysym("Control_L"), XK.string_to_keysym("a")

    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            # ws.py's absolute move: 0..65535 over the monitor; the centre is the centre.
            await ws.send_str(json.dumps({"type": "pointer_move", "x": 32768, "y": 32768,
                                          "absolute": True}))  # fmt: skip
            assert wait_for(lambda: pointer(desktop.display) == (WIDTH // 2, HEIGHT // 2), 10)
            await ws.send_str(json.dumps({"type": "pointer_move", "dx": 10, "dy": -5}))
            assert wait_for(
                lambda: pointer(desktop.display) == (WIDTH // 2 + 10, HEIGHT // 2 - 5), 10
            )
            # A click on a known spot of the window: 150,120 inside it (it is at 100,100).
            x, y = round(250 * 65535 / (WIDTH - 1)), round(220 * 65535 / (HEIGHT - 1))
            for message in (
                {"type": "pointer_move", "x": x, "y": y, "absolute": True},
                {"type": "pointer_button", "button": "left", "action": "down"},
                {"type": "pointer_button", "button": "left", "action": "up"},
            ):
                await ws.send_str(json.dumps(message))
            assert wait_for(lambda: (1, 150, 120) in recorder.clicks, 10)
            # The wheel, a notch up (120, as Windows counts): X's button 4, on the same spot.
            await ws.send_str(json.dumps({"type": "pointer_wheel", "delta_x": 0, "delta_y": 120}))
            assert wait_for(lambda: (4, 150, 120) in recorder.clicks, 10)
            # ws.py's key combo CTRL+A: the keys alone, modifiers first, released in reverse.
            for code, action in ((17, "down"), (65, "down"), (65, "up"), (17, "up")):
                await ws.send_str(json.dumps({"type": "key", "key_code": code, "action": action}))
            assert wait_for(lambda: recorder.pressed()[-2:] == [ctrl, a], 10)
            # The test script's form: the flag on the key, and Unicode text.
            await ws.send_str(json.dumps({"type": "text", "text": "é€"}))
            assert wait_for(lambda: len(recorder.pressed()) >= 4, 10)
            await ws.close()

    asyncio.run(run())


def test_bad_input_gets_error_frames_and_the_viewer_stays(desktop: Desktop) -> None:
    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            await ws.send_str("{not json")
            assert (await text_where(ws, lambda m: m["type"] == "error"))["error"] == "invalid_json"
            await ws.send_str(json.dumps({"type": "teleport"}))
            error = await text_where(ws, lambda m: m["type"] == "error")
            assert error["error"] == "unknown_type" and "teleport" in error["details"]
            await ws.send_str(json.dumps({"type": "monitor_select", "monitor_id": "DISPLAY9"}))
            assert (await text_where(ws, lambda m: m["type"] == "error"))["error"] == "not_found"
            await ws.send_str(json.dumps({"type": "text", "text": "x" * 5000}))
            assert "4096" in (await text_where(ws, lambda m: m["type"] == "error"))["details"]
            # Off screen: clamped to the edge, not an error.
            await ws.send_str(json.dumps({"type": "pointer_move", "x": 999999, "y": -5,
                                          "absolute": True}))  # fmt: skip
            assert wait_for(lambda: pointer(desktop.display) == (WIDTH - 1, 0), 10)
            # The integration's "click" action (a real agent ignores it) clicks.
            await ws.send_str(json.dumps({"type": "pointer_button", "button": "left",
                                          "action": "click"}))  # fmt: skip
            # A flood: more than 1000 a second are dropped, with an error frame, not a crash.
            for _ in range(1500):
                await ws.send_str(json.dumps({"type": "pointer_move", "dx": 0, "dy": 0}))
            assert (await text_where(ws, lambda m: m["type"] == "error"))["error"] == "rate_limited"
            # Over 64 KiB: closed with 1009, as the real agent does.
            await ws.send_str("x" * (65 * 1024))
            msg = await ws.receive(timeout=10)
            while msg.type is not aiohttp.WSMsgType.CLOSE:
                msg = await ws.receive(timeout=10)
            assert msg.data == 1009
        assert await _running(desktop)  # the agent is still up

    asyncio.run(run())


def test_the_same_url_reconnects_until_the_session_ends(desktop: Desktop) -> None:
    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            url = made["websocket_url"]
            first = await client.connect(url)
            assert (await first.receive_json(timeout=10))["type"] == "hello"
            second = await client.connect(url)  # the card opens it while ws.py holds it
            assert (await second.receive_json(timeout=10))["type"] == "hello"
            await second.close()
            again = await client.connect(url)  # ws.py's reconnect: the stored URL
            assert (await again.receive_json(timeout=10))["type"] == "hello"
            await client.post(f"/api/v1/sessions/desktop/{made['session_id']}/end")
            for ws in (first, again):
                msg = await ws.receive(timeout=10)
                while msg.type is not aiohttp.WSMsgType.CLOSE:
                    msg = await ws.receive(timeout=10)
                assert (msg.data, msg.extra) == (1000, "Session ended")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.connect(url)
            assert refused.value.status in (401, 404)

    asyncio.run(run())


def test_a_viewer_that_never_reads_holds_one_frame_and_input_still_lands(
    desktop: Desktop,
) -> None:
    """ws.py never reads its socket: the screen keeps changing, its input must still land,
    and the relay must not queue frames for it."""

    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            colours = [RED, BLUE]
            for i in range(40):
                _root(desktop.display, colours[i % 2])
                x = 1000 + (i % 2) * 200
                await ws.send_str(json.dumps({"type": "pointer_move", "x": x * 20, "y": 30000,
                                              "absolute": True}))  # fmt: skip
                await asyncio.sleep(0.05)
            expected = round((1200 * 20) * (WIDTH - 1) / 65535)
            assert wait_for(lambda: pointer(desktop.display)[0] == expected, 10)
            assert not ws.closed
            await ws.close()
            _root(desktop.display, RED)

    asyncio.run(run())


def test_the_agent_listens_on_no_port(desktop: Desktop) -> None:
    assert desktop.proc is not None
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    assert f"pid={desktop.proc.pid}," not in listening
    assert os.path.exists(f"/proc/{desktop.proc.pid}")


class Noise:
    """A real X window of random pixels (large JPEGs, as a busy screen makes), redrawn at will."""

    def __init__(self, xvfb: str, x: int = 600, y: int = 300, w: int = 400, h: int = 300) -> None:
        self.d = display.Display(xvfb)
        screen = self.d.screen()
        self.size = (w, h)
        self.win = screen.root.create_window(
            x, y, w, h, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            override_redirect=True,
        )  # fmt: skip
        self.gc = self.win.create_gc()
        self.win.map()
        self.d.sync()

    def draw(self) -> None:
        w, h = self.size
        rows = 40  # a request's worth at a time
        for top in range(0, h, rows):
            data = os.urandom(w * rows * 4)
            self.win.put_image(self.gc, 0, top, w, rows, X.ZPixmap, 24, 0, data)
        self.d.sync()

    def close(self) -> None:
        self.win.destroy()
        self.d.close()


def test_a_slow_viewer_sees_the_screen_as_it_is_now_not_a_backlog(desktop: Desktop) -> None:
    """A viewer that stops reading while a busy screen keeps changing gets, when it reads
    again, the screen as it is then: nothing piled up for it meanwhile."""
    noise = Noise(desktop.display)

    def small_window(addr: Any) -> socket.socket:
        # The viewer keeps a small receive buffer of its own (a phone on a slow link does):
        # what it has not read then waits on Tether's side, which is what is tested.
        family, kind, proto, _, _ = addr
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        return sock

    async def run() -> None:
        connector = aiohttp.TCPConnector(socket_factory=small_window)
        async with aiohttp.ClientSession(connector=connector) as http:
            client = HA(http, desktop.base, desktop.server.key)
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            await frame_where(ws, lambda im: True)
            for _ in range(80):  # four seconds of changes it does not read
                noise.draw()
                await asyncio.sleep(0.05)
            noise.close()
            _root(desktop.display, BLUE)
            # It is current after what the sockets held when it stopped reading (bounded in
            # bytes: its own small buffer, aiohttp's, the relay's fixed send buffer), not after
            # a frame for each of the 80 changes.
            stale = frames = 0
            async with asyncio.timeout(20):
                while True:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        image = parse_frame(msg.data)[3]
                        if near(image.getpixel((700, 400)), BLUE):
                            break
                        stale, frames = stale + len(msg.data), frames + 1
            assert stale <= 2 * 1024 * 1024 and frames <= 20, (stale, frames)
            await ws.close()
            _root(desktop.display, RED)

    asyncio.run(run())


def test_quality_is_honoured(desktop: Desktop) -> None:
    """The reference ignores `quality`; here a viewer's asked-for quality sets its JPEGs'."""

    async def sizes(ws: aiohttp.ClientWebSocketResponse, quality: int) -> int:
        await ws.send_str(json.dumps({"type": "quality", "quality": quality}))
        for i in range(8):  # changes, so frames come; the last ones are at the new quality
            _root(desktop.display, (i * 30, 100, 200 - i * 20))
            msg = await ws.receive(timeout=10)
            while msg.type is not aiohttp.WSMsgType.BINARY:
                msg = await ws.receive(timeout=10)
        return len(msg.data)

    async def run() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            # A picture with detail, so quality shows in the size: the test's window and text.
            high = await sizes(ws, 95)
            low = await sizes(ws, 5)
            assert low < high, (low, high)
            await ws.close()
            _root(desktop.display, RED)

    asyncio.run(run())


def test_audio_as_the_integration_sets_it(desktop: Desktop, pulse: PulseServer) -> None:
    """api.py's audio calls, checked with `pactl` against the real sound server: 0-100 on
    /audio/status, /audio/master and its /audio/device form; 0.0-1.0 on the document's."""
    pulse.pactl("set-default-sink", SPEAKERS)

    async def run() -> None:
        async with ha(desktop) as client:
            status = await client.get("/api/v1/audio/status")
            devices = {d["id"]: d for d in status["devices"]}
            assert set(devices) == {SPEAKERS, HEADPHONES}
            assert devices[SPEAKERS]["is_default"] is True
            await client.post("/api/v1/audio/master", {"volume": 40.0})
            assert raw_volumes(pulse.sink(SPEAKERS)) == [26214, 26214]  # 40 % of 65536
            await client.post("/api/v1/audio/master", {"muted": True})
            assert pulse.sink(SPEAKERS)["mute"] is True
            await client.post("/api/v1/audio/master", {})  # HA may send nothing: no change
            status = await client.get("/api/v1/audio/status")
            assert status["master"] == {"volume": 40.0, "muted": True}
            await client.post("/api/v1/audio/device", {"DeviceId": HEADPHONES, "Volume": 25.0})
            assert raw_volumes(pulse.sink(HEADPHONES)) == [16384, 16384]
            await client.post("/api/v1/audio/device", {"DeviceId": HEADPHONES, "Muted": True})
            assert pulse.sink(HEADPHONES)["mute"] is True
            assert raw_volumes(pulse.sink(HEADPHONES)) == [16384, 16384]
            await client.post("/api/v1/audio/default", {"DeviceId": HEADPHONES})
            assert pulse.pactl("get-default-sink").strip() == HEADPHONES
            state = await client.get("/api/v1/audio/state")  # the document's, 0.0-1.0
            assert state["default_output_device_id"] == HEADPHONES
            assert {d["id"]: d["volume"] for d in state["devices"]}[HEADPHONES] == 0.25
            # An unknown device: 404 in the document's shape.
            headers = {"X-Openctrol-Key": client.key}
            async with client.http.post(
                client.base + "/api/v1/audio/default", json={"DeviceId": "nope"},
                headers=headers, timeout=TIMEOUT,
            ) as r:  # fmt: skip
                assert r.status == 404 and (await r.json())["error"] == "not_found"

    try:
        asyncio.run(run())
    finally:
        pulse.pactl("set-default-sink", SPEAKERS)
        for sink in (SPEAKERS, HEADPHONES):
            pulse.pactl("set-sink-volume", sink, "100%")
            pulse.pactl("set-sink-mute", sink, "0")


def test_a_host_agent_runs_the_power_command_it_was_given_and_refuses_others(
    desktop: Desktop,
) -> None:
    """Shutdown configured: it runs. Restart not: 503 with a clear message, never the host's
    own reboot."""
    marker = desktop.server.home.parent / "shut-down"

    async def run() -> None:
        async with ha(desktop) as client:
            done = await client.post("/api/v1/power", {"action": "shutdown"})
            assert done == {"status": "ok", "action": "shutdown"} and marker.exists()
            headers = {"X-Openctrol-Key": client.key}
            async with client.http.post(
                client.base + "/api/v1/power", json={"action": "restart", "force": False},
                headers=headers, timeout=TIMEOUT,
            ) as r:  # fmt: skip
                body = await r.json()
            assert r.status == 503, body
            assert "TETHER_DESKTOP_RESTART_COMMAND" in body["details"]

    asyncio.run(run())


def test_the_agent_lost_and_back(desktop: Desktop) -> None:
    """Last in the file: on the Pub/Sub emulator, a subscriber process that stopped goes on
    getting a share of its subscription's messages (seen here: two of four, for 25 s), so
    commands right after the restart would come late and the tests after it would wait."""

    async def lost() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            desktop.stop_agent()
            msg = await ws.receive(timeout=20)
            while msg.type is not aiohttp.WSMsgType.CLOSE:
                msg = await ws.receive(timeout=20)
            assert msg.data == 1001  # a clean close: the agent went away

    async def back() -> None:
        async with ha(desktop) as client:
            made = await client.session()
            ws = await client.connect(made["websocket_url"])
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            await frame_where(ws, lambda im: True)
            await ws.close()

    asyncio.run(lost())
    desktop.start_agent()
    assert wait_for(lambda: asyncio.run(_running(desktop)), 60)
    asyncio.run(back())
