"""A desktop agent's display, streamed to its viewers through the tunnel (agent side).

One capture serves every viewer: the screen is shot at most `fps` times a second, and only
while some viewer can take a frame; a shot that shows no change is not sent again. Each viewer
has one frame in flight at most: the next goes when the relay says the last reached it
(`tunnel.SENT`), so a slow viewer gets fewer frames, never a queue. Its JPEG quality follows
how fast it takes them (down by 10 when a frame took over two frame periods, back up by 5,
never above what it asked for with a `quality` message), and one encoding serves all viewers
at a quality.

Input goes to XTEST on a thread of its own, in order per viewer, at most `MAX_INPUT_RATE`
messages a second (more are dropped, with one error frame a second). A message that is not
JSON, of an unknown type, or with a wrong value gets an error frame and changes nothing;
the viewer stays connected (the real clients never read text: `hello` and errors are for the
ones that do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tether.desktop import keys, tunnel
from tether.desktop.capture import DEFAULT_QUALITY, Capture, Monitor, Shot, clamp_quality
from tether.desktop.inject import MAX_TEXT, Injector

log = logging.getLogger(__name__)
T = TypeVar("T")
Send = Callable[[str | bytes], Awaitable[None]]

VERSION = "1.0"  # the hello's protocol version (the reference's)
MIN_QUALITY = 30
MAX_INPUT_RATE = 1000  # input messages a viewer may send a second (the real agent's limit)
MAX_PENDING_INPUT = 256  # messages waiting for the input thread, per viewer
DEGRADED_AFTER = 5  # consecutive failed shots
IDLE_SHOT = 1.0  # seconds between shots with no viewer (health: last_frame_at, degraded)
SESSION_EXPIRED = (1000, "Session expired")
SESSION_ENDED = (1000, "Session ended")
_BUTTON_ACTIONS = {"down": (True,), "up": (False,), "click": (True, False)}


class BadInput(ValueError):
    """A viewer's message that cannot be applied; its error frame says why."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code


@dataclass
class Viewer:
    channel: int
    session_id: str
    expires_at: datetime
    quality: int = DEFAULT_QUALITY  # asked for
    current: int = DEFAULT_QUALITY  # sent at, adapted to its speed
    generation: int = 0  # the last shot it was sent
    in_flight: float | None = None  # when its last frame left, until the relay says it arrived
    inputs: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(MAX_PENDING_INPUT)
    )
    window: tuple[int, int] = (0, 0)  # (second, messages in it)
    warned_at: int = -1  # the second of its last rate-limit error frame
    worker: asyncio.Task[None] | None = None


def _error(code: str, details: str) -> str:
    return json.dumps({"type": "error", "error": code, "details": details})


def _flag_keysyms(msg: dict[str, Any]) -> list[int]:
    return [ks for name, ks in keys.MODIFIER_FLAGS.items() if msg.get(name) is True]


class Streamer:
    def __init__(self, display: str, agent_id: str, fps: float = 30.0) -> None:
        self.display = display
        self.agent_id = agent_id
        self.period = 1.0 / max(1.0, min(fps, 60.0))
        self.viewers: dict[int, Viewer] = {}
        self._capture_thread = ThreadPoolExecutor(1, thread_name_prefix="desktop-capture")
        self._input_thread = ThreadPoolExecutor(1, thread_name_prefix="desktop-input")
        self._capture: Capture | None = None
        self._injector: Injector | None = None
        self._shot: Shot | None = None
        self._generation = 0
        self._encoded: dict[int, bytes] = {}  # quality -> the current shot's frame message
        self._failures = 0
        self._next_shot = 0.0  # monotonic time the next shot is due
        self.last_frame_at: datetime | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send: Send | None = None

    # -- the display -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to the display (each connection on the thread that will use it)."""
        self._capture = self._capture_thread.submit(Capture, self.display).result()
        self._injector = self._input_thread.submit(Injector, self.display).result()

    def close(self) -> None:
        if self._capture is not None:
            self._capture_thread.submit(self._capture.close).result()
        if self._injector is not None:
            self._input_thread.submit(self._injector.close).result()
        self._capture_thread.shutdown()
        self._input_thread.shutdown()

    @property
    def capture(self) -> Capture:
        if self._capture is None:
            raise RuntimeError("the display is not open")
        return self._capture

    def monitors(self) -> list[Monitor]:
        return self.capture.monitors()

    def select(self, monitor_id: str) -> bool:
        """Capture another monitor, for every viewer (as the real agent does). Any thread."""
        if not self.capture.select(monitor_id):
            return False
        self._next_shot = 0.0
        self._poke()
        return True

    def status(self) -> dict[str, Any]:
        """Health's `remote_desktop` block."""
        degraded = self._failures >= DEGRADED_AFTER
        running = self.last_frame_at is not None and not degraded  # it has shot the screen
        state = "desktop" if self._capture is not None else "unknown"
        return {
            "is_running": running,
            "last_frame_at": self.last_frame_at.isoformat() if self.last_frame_at else None,
            "state": f"{state}_degraded" if degraded and state != "unknown" else state,
            "desktop_state": state,
            "degraded": degraded,
        }

    # -- one tunnel connection ---------------------------------------------------------------

    async def serve(self, messages: Any, send: Send) -> None:
        """Serve one tunnel connection: `messages` iterates what the relay sends, `send` sends
        to it. Returns (its viewers gone) when the connection ends."""
        self._send, self._wake = send, asyncio.Event()
        self._loop = asyncio.get_running_loop()
        frames = asyncio.ensure_future(self._frames())
        try:
            async for message in messages:
                if isinstance(message, bytes):
                    await self._from_viewer(message)
                else:
                    await self._control(message)
        finally:
            frames.cancel()
            for viewer in list(self.viewers.values()):
                self._drop(viewer)
            self._send = self._wake = None

    async def _control(self, text: str) -> None:
        try:
            msg = json.loads(text)
            op, channel = msg["op"], int(msg["ch"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed tunnel control message")
            return
        if op == tunnel.OPEN:
            await self._open(channel, str(msg["session_id"]), str(msg["expires_at"]))
        elif op == tunnel.CLOSE:
            viewer = self.viewers.get(channel)
            if viewer is not None:
                self._drop(viewer)
        elif op == tunnel.SENT:
            viewer = self.viewers.get(channel)
            if viewer is not None and viewer.in_flight is not None:
                self._adapt(viewer, time.monotonic() - viewer.in_flight)
                viewer.in_flight = None
                self._poke()

    async def _open(self, channel: int, session_id: str, expires_at: str) -> None:
        viewer = Viewer(channel, session_id, datetime.fromisoformat(expires_at))
        self.viewers[channel] = viewer
        viewer.worker = asyncio.ensure_future(self._apply_inputs(viewer))
        hello = {
            "type": "hello",
            "agent_id": self.agent_id,
            "session_id": session_id,
            "version": VERSION,
            "monitors": [m.hello() for m in self.monitors()],
        }
        await self._text(viewer, json.dumps(hello))
        self._next_shot = 0.0  # its first frame is of the screen now, not of the last shot
        self._poke()

    def _drop(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer.channel, None)
        if viewer.worker is not None:
            viewer.worker.cancel()
        if self._injector is not None:  # a key a viewer left held must not stay down
            self._input_thread.submit(self._injector.release_all)

    async def end(self, session_id: str, why: tuple[int, str] = SESSION_ENDED) -> int:
        """Close the session's viewers (`why`: the close code and reason they get)."""
        ended = [v for v in self.viewers.values() if v.session_id == session_id]
        for viewer in ended:
            await self._close(viewer, why)
        return len(ended)

    async def _close(self, viewer: Viewer, why: tuple[int, str]) -> None:
        self._drop(viewer)
        if self._send is not None:
            code, reason = why
            close = tunnel.control(tunnel.CLOSE, viewer.channel, code=code, reason=reason)
            await self._send(json.dumps(close))

    async def _text(self, viewer: Viewer, text: str) -> None:
        if self._send is not None:
            await self._send(tunnel.pack(viewer.channel, tunnel.TEXT, text.encode()))

    def _poke(self) -> None:
        """Wake the frame loop (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    # -- frames ------------------------------------------------------------------------------

    def _adapt(self, viewer: Viewer, took: float) -> None:
        if took > 2 * self.period:
            viewer.current = max(MIN_QUALITY, viewer.current - 10)
        elif took < self.period / 2:
            viewer.current = min(viewer.quality, viewer.current + 5)

    async def _in(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _shoot(self) -> None:
        try:
            shot = await self._in(self._capture_thread, self.capture.shot)
        except Exception:  # the display went away, say: reported by health, tried again
            self._failures += 1
            if self._failures in (1, DEGRADED_AFTER):
                log.exception("capturing %s failed", self.display)
            return
        self._failures = 0
        self._next_shot = 0.0  # monotonic time the next shot is due
        self.last_frame_at = datetime.now(UTC)
        if shot is not None:
            self._shot, self._generation = shot, self._generation + 1
            self._encoded.clear()

    async def _frame(self, quality: int) -> bytes:
        quality = clamp_quality(quality // 5 * 5 or 1)  # steps of 5: viewers share encodings
        if quality not in self._encoded:
            assert self._shot is not None
            frame = await self._in(self._capture_thread, self._shot.encode, quality)
            self._encoded[quality] = frame.message()
        return self._encoded[quality]

    async def _frames(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            now = time.monotonic()
            await self._expire()
            ready = [v for v in self.viewers.values() if v.in_flight is None]
            # Shoot when a viewer could take a change, or has had nothing yet (or now and then
            # with none, for health).
            if now >= self._next_shot and (
                any(v.generation in (0, self._generation) for v in ready) or not self.viewers
            ):
                await self._shoot()
                self._next_shot = now + (self.period if self.viewers else IDLE_SHOT)
            for viewer in ready:
                if viewer.generation < self._generation and viewer.channel in self.viewers:
                    message = await self._frame(viewer.current)
                    viewer.generation, viewer.in_flight = self._generation, time.monotonic()
                    if self._send is not None:
                        await self._send(tunnel.pack(viewer.channel, tunnel.FRAME, message))
            wake.clear()
            # Until the next shot is due when a viewer could take it, else until a viewer
            # takes its frame (or a second passes: sessions expire, health wants a shot).
            waiting = any(v.in_flight is None for v in self.viewers.values()) or not self.viewers
            delay = max(0.0, self._next_shot - time.monotonic()) if waiting else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=min(delay, 1.0))

    async def _expire(self) -> None:
        now = datetime.now(UTC)
        for viewer in [v for v in self.viewers.values() if v.expires_at <= now]:
            await self._close(viewer, SESSION_EXPIRED)

    # -- input -------------------------------------------------------------------------------

    async def _from_viewer(self, data: bytes) -> None:
        try:
            message = tunnel.unpack(data)
        except ValueError:
            log.warning("ignoring a malformed tunnel message")
            return
        viewer = self.viewers.get(message.channel)
        if viewer is None or message.kind != tunnel.TEXT:
            return
        try:
            msg = json.loads(message.payload)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise BadInput("invalid_message", 'expected a JSON object with a "type"')
        except (ValueError, UnicodeDecodeError) as exc:
            code = exc.code if isinstance(exc, BadInput) else "invalid_json"
            await self._text(viewer, _error(code, str(exc) if code != "invalid_json" else
                                            "the message is not JSON"))  # fmt: skip
            return
        second = int(time.monotonic())
        start, count = viewer.window
        viewer.window = (second, 1) if start != second else (start, count + 1)
        if viewer.window[1] > MAX_INPUT_RATE or viewer.inputs.full():
            if viewer.warned_at != second:
                viewer.warned_at = second
                limit = f"more than {MAX_INPUT_RATE} input messages a second: dropped"
                await self._text(viewer, _error("rate_limited", limit))
            return
        viewer.inputs.put_nowait(msg)

    async def _apply_inputs(self, viewer: Viewer) -> None:
        while True:
            msg = await viewer.inputs.get()
            try:
                await self._apply(viewer, msg)
            except BadInput as bad:
                await self._text(viewer, _error(bad.code, str(bad)))
            except Exception:  # the display's trouble, not the viewer's: logged, not fatal
                log.exception("input %r failed", msg.get("type"))

    async def _apply(self, viewer: Viewer, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "quality":
            q = msg.get("quality")
            if isinstance(q, bool) or not isinstance(q, int | float) or not 1 <= q <= 100:
                raise BadInput("invalid_value", "quality must be a number from 1 to 100")
            viewer.quality = viewer.current = clamp_quality(q)
            return
        if kind == "monitor_select":
            if not self.select(str(msg.get("monitor_id"))):
                raise BadInput("not_found", f"no monitor {msg.get('monitor_id')!r}")
            return
        handler = _INPUTS.get(kind)
        if handler is None:
            raise BadInput("unknown_type", f"unknown message type {kind!r}")
        injector, monitor = self._injector, self.capture.monitor
        assert injector is not None
        problem = await self._in(self._input_thread, handler, injector, monitor, msg)
        if problem:
            raise BadInput("invalid_value", problem)


# Each input message type: applied on the input thread; returns what is wrong with it, if
# anything (nothing is injected then).


def _pointer_move(inj: Injector, m: Monitor, msg: dict[str, Any]) -> str | None:
    if msg.get("absolute") is True and "x" in msg and "y" in msg:
        rect = (m.left, m.top, m.width, m.height)
        ok = inj.move_normalized(msg["x"], msg["y"], rect)
        return None if ok else "x and y must be integers from 0 to 65535"
    ok = inj.move_relative(msg.get("dx", 0), msg.get("dy", 0))
    return None if ok else "dx and dy must be integers"


def _pointer_button(inj: Injector, m: Monitor, msg: dict[str, Any]) -> str | None:
    action = _BUTTON_ACTIONS.get(str(msg.get("action", "")).lower())
    if action is None:
        return 'action must be "down", "up" or "click"'
    button = str(msg.get("button", "")).lower()
    for down in action:
        if not inj.button(button, down):
            return 'button must be "left", "right" or "middle"'
    return None


def _pointer_wheel(inj: Injector, m: Monitor, msg: dict[str, Any]) -> str | None:
    ok = inj.wheel(msg.get("delta_x", 0), msg.get("delta_y", 0))
    return None if ok else "delta_x and delta_y must be integers"


def _key(inj: Injector, m: Monitor, msg: dict[str, Any]) -> str | None:
    keysym = keys.keysym(msg.get("key_code"))
    if keysym is None:
        return f"key_code {msg.get('key_code')!r} is not a virtual-key code this agent maps"
    flags = _flag_keysyms(msg)
    if msg.get("action") == "up":  # anything else is a press, as the real agent reads it
        inj.key(keysym, False)
        for flag in reversed(flags):
            inj.key(flag, False)
    else:
        for flag in flags:
            inj.key(flag, True)
        inj.key(keysym, True)
    return None


def _text(inj: Injector, m: Monitor, msg: dict[str, Any]) -> str | None:
    text = msg.get("text")
    if not isinstance(text, str):
        return "text must be a string"
    if len(text) > MAX_TEXT:
        return f"text is longer than {MAX_TEXT} characters"
    flags = _flag_keysyms(msg)
    for flag in flags:
        inj.key(flag, True)
    try:
        inj.text(text)
    finally:
        for flag in reversed(flags):
            inj.key(flag, False)
    return None


_INPUTS: dict[str, Callable[[Injector, Monitor, dict[str, Any]], str | None]] = {
    "pointer_move": _pointer_move,
    "pointer_button": _pointer_button,
    "pointer_wheel": _pointer_wheel,
    "key": _key,
    "text": _text,
}
