"""The Openctrol desktop stream end to end, next to the capture it is built on, in the same run.

For each screen size, a private Xvfb, a desktop agent subprocess on it (TETHER_DESKTOP_FPS=30)
dialing one `tether up`, and a viewer that speaks as the Home Assistant integration does
(tests/desktop/test_openctrol_desktop.py's helpers):

- changing screen: an X client pans a picture (colour gradients plus Gaussian noise, put with
  PutImage into a pixmap once) over the whole screen 60 times a second; the viewer reads
  as fast as it can: frames/s, bytes/frame and the JPEG quality the frames carry (estimated
  from their quantization tables), next to `Capture.shot(force=True).encode(75)` in a loop on
  the same screen (no network);
- static screen: the same viewer on a still picture (frames only when it changed: ~1), next to
  what the direct loop would send at 30 fps;
- input to pixel: a real X window repaints itself red/blue on each KeyPress; the viewer sends
  `key` down+up (key_code 65) and waits for the first frame showing the new colour; the floor
  is the same key through XTEST directly (`Injector`) and a direct capture loop polling for it.

Prints figures; asserts only correctness (frames parse, colours seen, samples collected).
Part of `make test` (tests/ as a whole): about 20 s; TETHER_BENCH_OPENCTROL_SECONDS and
TETHER_BENCH_OPENCTROL_SAMPLES make the windows longer and the samples more.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import select
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from PIL import Image, ImageChops
from tether.desktop import frames
from tether.desktop.capture import Capture
from tether.desktop.inject import Injector
from Xlib import X, display

from tests.desktop.conftest import xvfb_server
from tests.desktop.test_openctrol_desktop import HA, Desktop, _running, ha, near, parse_frame
from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

SIZES = [(1280, 800), (1920, 1080)]
SECONDS = float(os.environ.get("TETHER_BENCH_OPENCTROL_SECONDS", "2"))
SAMPLES = int(os.environ.get("TETHER_BENCH_OPENCTROL_SAMPLES", "6"))
FPS = 30  # the agent's TETHER_DESKTOP_FPS
REDRAW_HZ = 60  # the changing screen: above the agent's rate, so every shot sees a change
STEP = 7  # pixels the picture pans by each redraw
QUALITY = 75  # the agent's default and the direct baseline's
KEY_CODE, KEYSYM = 65, 0x61  # VK 'A' -> keysym 'a' (tether.desktop.keys)
WINDOW = (100, 100, 400, 300)  # the toggling window: x, y, width, height
PROBE = (300, 250)  # its centre
RED, BLUE = (255, 0, 0), (0, 0, 255)
# libjpeg's luminance table (ITU T.81 Annex K) at quality 50: a frame's own table, scaled
# against it, tells the quality it was encoded at (order-free: only the sums are compared).
STD_LUMA_SUM = sum(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
     69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
     81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)  # fmt: skip


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def quality_of(jpeg: bytes) -> int:
    """The libjpeg quality setting that gives this JPEG's luminance table (±1)."""
    table = Image.open(io.BytesIO(jpeg)).quantization[0]  # type: ignore[attr-defined]
    scale = 100 * sum(table) / STD_LUMA_SUM
    return round((200 - scale) / 2 if scale <= 100 else 5000 / scale)


def probe(jpeg: bytes, size: tuple[int, int]) -> tuple[int, ...]:
    """The colour at PROBE, decoded at 1/8 scale (the window is a big solid block): cheap
    enough that neither path's latency is mostly the decoder's."""
    image = Image.open(io.BytesIO(jpeg))
    image.draft("RGB", (size[0] // 8, size[1] // 8))
    image = image.convert("RGB")
    f = size[0] / image.width
    return tuple(image.getpixel((int(PROBE[0] / f), int(PROBE[1] / f))))  # type: ignore[arg-type]


def picture(width: int, height: int) -> Image.Image:
    """Colour gradients plus Gaussian noise (sigma 16): photo-like, not a flat desktop."""
    ramp = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    base = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_180), radial))
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 16) for _ in range(3)])
    return ImageChops.add(base, noise, offset=-128)


def viewable(win: object) -> bool:
    return bool(win.get_attributes().map_state == X.IsViewable)  # type: ignore[attr-defined]


class Redraw:
    """A full-screen window panning over a picture twice the screen's width, STEP pixels
    REDRAW_HZ times a second, while running: every redraw differs from the last ones (no
    cycle of a few pictures that a capture rate could alias with). CopyArea from a pixmap:
    the client costs next to nothing, the X server copies."""

    def __init__(self, name: str, width: int, height: int) -> None:
        self.d = display.Display(name)
        screen = self.d.screen()
        self.size = (width, height)
        self.win = screen.root.create_window(
            0, 0, width, height, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=screen.black_pixel, override_redirect=True,
        )  # fmt: skip
        self.gc = self.win.create_gc()
        raw = picture(2 * width, height).tobytes("raw", "BGRX")
        self.pixmap = self.win.create_pixmap(2 * width, height, screen.root_depth)
        line = 2 * width * 4
        rows = max(1, (self.d.display.info.max_request_length * 4 - 1024) // line)
        for y in range(0, height, rows):  # PutImage in strips: a request's size is bounded
            h = min(rows, height - y)
            self.pixmap.put_image(self.gc, 0, y, 2 * width, h, X.ZPixmap, screen.root_depth,
                                  0, raw[y * line : (y + h) * line])  # fmt: skip
        self.win.map()
        assert wait_for(lambda: viewable(self.win), 10)
        self.show(0)
        self.drawn = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def show(self, n: int) -> None:
        x = n * STEP % self.size[0]
        self.win.copy_area(self.gc, self.pixmap, x, 0, *self.size, 0, 0)
        self.d.sync()  # drawn when this returns

    def _run(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            self.drawn += 1
            self.show(self.drawn)
            tick += 1 / REDRAW_HZ  # pacing the load, nothing waits on it
            time.sleep(max(0.0, tick - time.monotonic()))

    def start(self) -> None:
        self.stop.clear()
        self.drawn = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def halt(self) -> None:
        """Stop redrawing; the screen is still (and its last picture drawn) on return."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
            assert not self.thread.is_alive()

    def close(self) -> None:
        self.halt()
        self.d.close()


class Toggle:
    """A window with the input focus that repaints itself red <-> blue on every KeyPress and
    notes when the repaint was done (perf_counter, the bench's clock)."""

    def __init__(self, name: str) -> None:
        self.d = display.Display(name)
        screen = self.d.screen()
        x, y, w, h = WINDOW
        self.win = screen.root.create_window(
            x, y, w, h, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            override_redirect=True, event_mask=X.KeyPressMask | X.ExposureMask,
        )  # fmt: skip
        self.gc = self.win.create_gc()
        self.colour = RED
        self.painted: list[float] = []
        self.win.map()
        assert wait_for(lambda: viewable(self.win), 10)
        self.win.set_input_focus(X.RevertToParent, X.CurrentTime)
        self._paint()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def next_colour(self) -> tuple[int, int, int]:
        return BLUE if self.colour == RED else RED

    def _paint(self) -> None:
        r, g, b = self.colour
        self.gc.change(foreground=(r << 16) | (g << 8) | b)  # TrueColor, 24 bits
        self.win.fill_rectangle(self.gc, 0, 0, WINDOW[2], WINDOW[3])
        self.d.sync()

    def _run(self) -> None:
        while not self.stop.is_set():
            select.select([self.d], [], [], 0.1)
            while self.d.pending_events():
                ev = self.d.next_event()
                if ev.type == X.KeyPress:
                    self.colour = self.next_colour
                    self._paint()
                    self.painted.append(time.perf_counter())
                elif ev.type == X.Expose:
                    self._paint()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.win.destroy()
        self.d.close()


@dataclass
class Agent(Desktop):
    """Desktop's agent under another id (one per screen size, on the one `tether up`)."""

    agent: str = "pc1"

    @property
    def base(self) -> str:
        port = self.server.url.rsplit(":", 1)[1]
        return f"{self.server.url}/openctrol/{self.agent}:{port}"


@dataclass
class Stream:
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    qualities: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # seconds after `hello` (the first few)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def per_frame(self) -> float:
        return self.bytes / max(1, self.frames)


@dataclass
class Result:
    size: tuple[int, int]
    changing: Stream
    changing_direct: Stream
    redraw_hz: float
    static: Stream
    static_direct: Stream
    latency: list[float]
    key_to_paint: list[float]
    latency_direct: list[float]
    key_to_paint_direct: list[float]

    @property
    def first_key(self) -> float:
        """The first key -> pixel on a new viewer (not in `latency`)."""
        return self.latency[0]


def checked(data: bytes, size: tuple[int, int]) -> bytes:
    """The JPEG of a frame whose header says the screen's size and JPEG."""
    header = frames.parse_header(data)
    assert (header.width, header.height, header.format) == (*size, frames.FORMAT_JPEG), header
    jpeg = data[frames.HEADER_SIZE :]
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9", "not a whole JPEG"
    return jpeg


async def next_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> bytes:
    """The next binary message (text ones must not be errors); TimeoutError after `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            assert json.loads(msg.data)["type"] != "error", msg.data


async def viewer(
    agent: Agent, client: HA, size: tuple[int, int]
) -> aiohttp.ClientWebSocketResponse:
    made = await client.session()
    ws = await client.connect(made["websocket_url"])
    hello = await ws.receive_json(timeout=10)
    assert hello["type"] == "hello" and hello["agent_id"] == agent.agent, hello
    assert (hello["monitors"][0]["width"], hello["monitors"][0]["height"]) == size
    return ws


async def watch(agent: Agent, size: tuple[int, int], seconds: float, *, static: bool) -> Stream:
    """A viewer reading as fast as it can. Changing: `seconds` from its second frame (the first
    is whatever the agent shot last, see the table); static: `seconds` from `hello`, every
    frame counted."""
    async with ha(agent) as client:
        ws = await viewer(agent, client, size)
        hello = time.perf_counter()
        first = await next_frame(ws, 20)
        w, h, fmt, image = parse_frame(first)  # one decoded whole, as ws.py does
        assert (w, h, fmt) == (*size, 1) == (*image.size, 1)
        s = Stream(arrivals=[time.perf_counter() - hello])
        if static:
            started = hello
            s.frames, s.bytes = 1, len(first)
            s.qualities.append(quality_of(checked(first, size)))
        else:
            checked(await next_frame(ws, 20), size)
            started = time.perf_counter()
            s.arrivals.append(started - hello)
        last = first
        deadline = started + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                last = await next_frame(ws, left)
            except TimeoutError:
                break
            s.frames += 1
            s.bytes += len(last)
            s.qualities.append(quality_of(checked(last, size)))
            if static:
                s.arrivals.append(time.perf_counter() - hello)
        s.seconds = time.perf_counter() - started
        parse_frame(last)  # the last one decodes too
        await ws.close()
        return s


def direct(name: str, seconds: float) -> Stream:
    """`Capture.shot(force=True).encode(75)` in a loop: what the agent's capture can do alone."""
    s = Stream()
    with Capture(name) as capture:
        started = time.perf_counter()
        while (now := time.perf_counter()) - started < seconds:
            shot = capture.shot(force=True)
            assert shot is not None
            frame = shot.encode(QUALITY)
            s.frames += 1
            s.bytes += len(frame.message())
            if s.frames == 1:
                s.qualities.append(quality_of(frame.jpeg))
        s.seconds = now - started
    return s


Samples = tuple[list[float], list[float]]  # key -> pixel seen, key -> window repainted
# Each has 1 + SAMPLES: the first key is sent right after the viewer saw the window; the table
# keeps it apart (a new viewer's first frames follow the agent's idle schedule, see there).


async def latency_through(agent: Agent, toggle: Toggle, size: tuple[int, int]) -> Samples:
    """Key down+up sent by the viewer -> the first frame showing the window's new colour."""
    took: list[float] = []
    painted: list[float] = []
    async with ha(agent) as client:
        ws = await viewer(agent, client, size)
        async with asyncio.timeout(20):  # the window's current colour on the viewer first
            while not near(probe(checked(await next_frame(ws, 20), size), size), toggle.colour):
                pass
        for _ in range(1 + SAMPLES):  # the first, on a new viewer, is kept apart
            await asyncio.sleep(random.uniform(0.02, 0.06))  # pacing: any phase of the capture
            want, presses = toggle.next_colour, len(toggle.painted)
            started = time.perf_counter()
            for action in ("down", "up"):
                key = {"type": "key", "key_code": KEY_CODE, "action": action}
                await ws.send_str(json.dumps(key))
            while not near(probe(checked(await next_frame(ws, 10), size), size), want):
                pass
            took.append(time.perf_counter() - started)
            # The repaint is noted just after the X server drew it: maybe after the capture.
            assert wait_for(lambda n=presses: len(toggle.painted) > n, 10), "no repaint"
            assert len(toggle.painted) == presses + 1, "one press, one repaint"
            painted.append(toggle.painted[-1] - started)
        await ws.close()
    return took, painted


def latency_direct(name: str, toggle: Toggle, size: tuple[int, int]) -> Samples:
    """The floor: the key through XTEST here, then a direct capture loop until the colour."""
    took: list[float] = []
    painted: list[float] = []
    with Injector(name) as injector, Capture(name) as capture:
        for _ in range(1 + SAMPLES):  # as the viewer's
            time.sleep(random.uniform(0.02, 0.06))  # pacing, as the viewer's
            want, presses = toggle.next_colour, len(toggle.painted)
            started = time.perf_counter()
            assert injector.key(KEYSYM, True) and injector.key(KEYSYM, False)
            deadline = started + 10
            while True:
                shot = capture.shot(force=True)
                assert shot is not None
                if near(probe(shot.encode(QUALITY).jpeg, size), want):
                    break
                assert time.perf_counter() < deadline, f"{want} never showed"
            took.append(time.perf_counter() - started)
            # The repaint is noted just after the X server drew it: maybe after the capture.
            assert wait_for(lambda n=presses: len(toggle.painted) > n, 10), "no repaint"
            assert len(toggle.painted) == presses + 1, "one press, one repaint"
            painted.append(toggle.painted[-1] - started)
    return took, painted


def bench_size(server: Server, size: tuple[int, int]) -> Result:
    width, height = size
    with xvfb_server(width, height) as name:
        redraw = Redraw(name, width, height)
        agent = Agent(server, name, {}, agent=f"bench{width}")
        agent.env = {
            **server.env,
            "TETHER_PLATFORM": "desktop",
            "TETHER_AGENT_ID": agent.agent,
            "TETHER_PUBLIC_URL": server.url,
            "DISPLAY": name,
            "TETHER_DESKTOP_FPS": str(FPS),
        }
        agent.env.pop("PORT", None)
        agent.start_agent()
        toggle = None
        try:
            assert wait_for(lambda: asyncio.run(_running(agent)), 60), "no desktop agent"
            # 1. The screen changing all the time: through the relay, then directly.
            redraw.start()
            changing = asyncio.run(watch(agent, size, SECONDS, static=False))
            drawn, drawn_at = redraw.drawn, time.perf_counter()
            changing_direct = direct(name, SECONDS)
            redraw_hz = (redraw.drawn - drawn) / (time.perf_counter() - drawn_at)
            redraw.halt()
            # 2. A still screen (the last picture).
            static = asyncio.run(watch(agent, size, SECONDS, static=True))
            static_direct = direct(name, min(1.0, SECONDS))
            # 3. Input to pixel: a window that changes colour on each key press.
            toggle = Toggle(name)
            latency, key_to_paint = asyncio.run(latency_through(agent, toggle, size))
            latency_floor, key_to_paint_floor = latency_direct(name, toggle, size)
        finally:
            if toggle is not None:
                toggle.close()
            agent.stop_agent()
            redraw.close()
    return Result(size, changing, changing_direct, redraw_hz, static, static_direct, latency,
                  key_to_paint, latency_floor, key_to_paint_floor)  # fmt: skip


@pytest.mark.timeout(300)
def test_openctrol_stream_next_to_direct_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = {"TETHER_BUS": "sqlite", "TETHER_OPENCTROL_HA_IDS": "home-assistant"}
    server = start_server(tmp_path / "home", shared)
    started = time.perf_counter()
    try:
        results = [bench_size(server, size) for size in SIZES]
    finally:
        server.stop()
    took = time.perf_counter() - started

    for r in results:  # correctness: what the table is made of is there
        assert r.changing.frames > 0 and r.changing_direct.frames > 0
        assert r.static.frames >= 1
        assert len(r.latency) == len(r.latency_direct) == 1 + SAMPLES

    def ms(xs: list[float]) -> str:
        p50, p90, top = (1000 * v for v in (pct(xs, 0.5), pct(xs, 0.9), max(xs)))
        return f"p50 {p50:5.1f} p90 {p90:6.1f} max {top:6.1f} ms"

    def at(xs: list[float]) -> str:
        return ", ".join(f"{1000 * x:.0f}" for x in xs) + " ms after hello"

    with capsys.disabled():
        print(f"\n\nOpenctrol desktop stream: agent ({FPS} fps cap) -> `tether up` relay -> "
              f"aiohttp viewer, next to Capture.shot(force=True).encode({QUALITY}) in process; "
              f"{SECONDS:g} s windows, {SAMPLES} key samples, {took:.0f} s in all")  # fmt: skip
        for r in results:
            c, cd, s, sd = r.changing, r.changing_direct, r.static, r.static_direct
            print(f"  {r.size[0]}x{r.size[1]}: the screen panned {r.redraw_hz:.0f} times/s "
                  f"(gradients + noise sigma 16)")  # fmt: skip
            print(
                f"    changing  tether {c.fps:5.1f} fps {c.per_frame / 1000:6.1f} kB/frame "
                f"q{statistics.median(c.qualities):.0f} (min q{min(c.qualities)})"
                f" | direct {cd.fps:5.1f} fps {cd.per_frame / 1000:6.1f} kB/frame "
                f"q{cd.qualities[0]} | x{c.fps / cd.fps:4.2f} fps, "
                f"x{c.per_frame / cd.per_frame:4.2f} bytes, x{c.fps / FPS:4.2f} the cap"
            )
            print(f"              (its first two frames: {at(c.arrivals)}; counted from the "
                  f"second)")  # fmt: skip
            would = min(FPS, sd.fps) * sd.per_frame  # the direct loop sends every shot
            rate = s.bytes / s.seconds
            print(f"    static    tether {s.frames} frame(s) in {s.seconds:.1f} s "
                  f"({at(s.arrivals)}) {rate / 1000:6.1f} kB/s | direct every shot at "
                  f"{min(FPS, sd.fps):.0f} fps x {sd.per_frame / 1000:.1f} kB = "
                  f"{would / 1000:7.1f} kB/s | saving {1 - rate / would:6.2%}")  # fmt: skip
            lat, floor = r.latency[1:], r.latency_direct[1:]
            print(f"    key->px   tether {ms(lat)} | direct {ms(floor)}"
                  f" | x{pct(lat, 0.5) / pct(floor, 0.5):4.2f} p50")  # fmt: skip
            print(f"              (first key on a new viewer: tether {1000 * r.first_key:.0f} ms,"
                  f" direct {1000 * r.latency_direct[0]:.0f} ms; not in the above)")  # fmt: skip
            print(f"    key->painted (the window's repaint)  tether {ms(r.key_to_paint[1:])}"
                  f" | direct {ms(r.key_to_paint_direct[1:])}")  # fmt: skip
        print()
