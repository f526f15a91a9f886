"""The relay's side of terminal recordings (`tether.service.recordings`): while a session's
recording is on, a copy of what its terminal streams show becomes asciicast events, written in
parts to the recordings' store.

The relay passes a terminal's bytes on untouched (`tether.relay.streams`); a `Recorder` gets a
copy of each chunk after it has been passed on, in both directions, and follows its frames
(`tether.relay.frames`). Every terminal stream is followed from its first byte, since frames
cannot be found from the middle of one: a recording started while a terminal is open records
it from then on. While one is on, output (the runtime's binary frames) becomes "o" events and
the client's resize messages "r" events; keystrokes are never kept (they hold passwords typed
at prompts; what they echo is output).

A recording never slows or breaks the terminal: the copy is parsed after the bytes went on,
parts are written by one task per stream on the relay's threads, what waits to be written is
bounded (past it, or on any storage error, the recording is marked failed and the terminal
goes on), and a failure here is logged, never raised into the relay.

Whether a recording is on is one document (`recording_on/<session>`), read as the stream opens
and every `access.WATCH_INTERVAL` while it lasts; the relay keeps nothing another instance
needs (parts name their stream and order; the recording's record counts its writers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from websockets.frames import Opcode

from tether import bootstrap
from tether.core import asciicast
from tether.relay import access
from tether.relay.frames import Follower
from tether.service.recordings import On, Recordings

T = TypeVar("T")
Blocking = Callable[..., Awaitable[Any]]
log = logging.getLogger(__name__)

PART_BYTES = 64 << 10  # a part is written once this much is held...
FLUSH_EVERY = 5.0  # ...or this many seconds after its first event
# While a part is being written, the next grows up to this (a fast terminal makes fewer,
# larger parts rather than a queue of small ones)...
MAX_PART = 1 << 20
MAX_PENDING = 2 << 20  # ...and at most this many bytes wait for the store; past it: failed
MAX_CONTROL = 4096  # bytes of a client's text message read (a resize is ~40)
MAX_FRAME = 1 << 20  # a larger output frame is not recorded (the runtime sends 64 KiB at most)
TEXT, BINARY = Opcode.TEXT.value, Opcode.BINARY.value
_writing: set[asyncio.Task[None]] = set()  # final writes still going after their stream ended


def recordings() -> Recordings:
    return bootstrap.services().recordings


@dataclass
class _Active:
    """The recording this stream writes to now."""

    id: str
    started: float  # its start, epoch seconds
    seq: int = 0
    last: float = 0.0  # time of the last event: events never go back in time
    dropped: bool = False  # it records no more (stopped under us, or failed)


@dataclass
class _Held:
    """Events not yet handed to the writer: (epoch seconds, code, data)."""

    events: list[tuple[float, str, str]] = field(default_factory=list)
    size: int = 0
    since: float = 0.0
    opening: tuple[int, int] = (80, 24)  # the terminal's size before the first of them


class Recorder:
    """One relayed terminal stream's recorder."""

    def __init__(self, session_id: str, cols: int, rows: int, blocking: Blocking) -> None:
        self.session_id = session_id
        self.stream = secrets.token_hex(4)
        self.size = (cols, rows)
        self.blocking = blocking
        self.runtime_frames = Follower(self._output_wanted, self._output)
        self.client_frames = Follower(self._control_wanted, self._control_part)
        self.output = asciicast.Output()
        self.out_binary = False  # the runtime's message being read is binary
        self.in_text = False  # the client's message being read is text
        self.control = bytearray()  # a client's text message, in fragments
        self.known = False  # whether a recording is on has been read at least once
        self.active: _Active | None = None
        self.held = _Held()
        self.pending = 0  # bytes queued for the writer
        self.jobs: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())
        self.watcher = asyncio.ensure_future(self._watch())

    # -- the copies (called by the relay's sides: never raise) -----------------------------------

    def from_runtime(self, data: bytes) -> None:
        try:
            self.runtime_frames.feed(data)
        except Exception:
            log.exception("recording: the runtime's frames of %s unreadable", self.session_id)

    def from_client(self, data: bytes) -> None:
        try:
            self.client_frames.feed(data)
        except Exception:
            log.exception("recording: the client's frames of %s unreadable", self.session_id)

    @property
    def recording(self) -> bool:
        """Whether what the terminal shows is kept: a recording is on, or not known to be off."""
        return self.active is not None or not self.known

    def _output_wanted(self, opcode: int, size: int) -> bool:
        if opcode in (TEXT, BINARY):  # a message begins (a ping may come between its frames)
            self.out_binary = opcode == BINARY
        return self.out_binary and opcode < 8 and size <= MAX_FRAME and self.recording

    def _output(self, opcode: int, fin: bool, payload: bytes | None) -> None:
        if payload is not None and (text := self.output.text(payload)):
            self._event("o", text)

    def _control_wanted(self, opcode: int, size: int) -> bool:
        if opcode in (TEXT, BINARY):
            self.in_text = opcode == TEXT
            self.control.clear()
        return self.in_text and opcode < 8 and len(self.control) + size <= MAX_CONTROL

    def _control_part(self, opcode: int, fin: bool, payload: bytes | None) -> None:
        if opcode >= 8 or not self.in_text:
            return
        if payload is None:  # too long to be a resize
            self.in_text = False
        else:
            self.control += payload
            if fin:
                self._control(bytes(self.control))
                self.in_text = False

    def _control(self, message: bytes) -> None:
        try:
            sent = orjson.loads(message)
            if sent.get("type") != "resize":
                return
            cols, rows = int(sent["cols"]), int(sent["rows"])
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # not a resize the runtime takes either
        if 1 <= cols <= 1000 and 1 <= rows <= 1000 and (cols, rows) != self.size:
            before, self.size = self.size, (cols, rows)
            self._event("r", f"{cols}x{rows}", before)

    def _event(self, code: str, data: str, before: tuple[int, int] | None = None) -> None:
        if not self.recording:
            return
        now = time.time()
        if not self.held.events:
            self.held.since, self.held.opening = now, before or self.size
        self.held.events.append((now, code, data))
        self.held.size += len(data) + 24
        if self.active is not None and self.held.size >= (MAX_PART if self.pending else PART_BYTES):
            self._hand_over()
        elif not self.known and self.held.size > MAX_PENDING:
            self.held = _Held()  # the store has not said yet, for that long: give up on it

    # -- the stream's life ------------------------------------------------------------------------

    def close(self) -> None:
        """The stream has ended: what is held is written (in the background), and the stream
        leaves its recording."""
        self.watcher.cancel()
        self._queue(self._ending())
        _writing.add(self.writer)
        self.writer.add_done_callback(_writing.discard)

    async def _ending(self) -> None:
        if rest := self.output.rest():
            self._event("o", rest)
        if not self.known:  # it ended before the store said whether it records: ask once more
            try:
                self._switch(await self.blocking(recordings().recording_on, self.session_id))
            except Exception:
                log.warning("recording: could not read whether %s records", self.session_id)
        self._switch(None)
        self.jobs.put_nowait(None)  # after what that queued: the writer's last job

    async def _watch(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(access.WATCH_INTERVAL)
            first = False
            try:
                on = await self.blocking(recordings().recording_on, self.session_id)
            except Exception:  # the store out of reach: look again later
                log.warning("recording: could not read whether %s records", self.session_id)
                continue
            self._switch(on)
            due = self.held.events and time.time() - self.held.since >= FLUSH_EVERY
            if self.active is not None and due:
                self._hand_over()

    def _switch(self, on: On | None) -> None:
        """Follows the session's recording: leaves the one it wrote to, joins a new one."""
        was, self.known = self.active, True
        if was is not None and (on is None or on.recording_id != was.id):
            self._hand_over(final=True)
            self.active = None
        if on is not None and self.active is None and (was is None or was.id != on.recording_id):
            self.active = _Active(on.recording_id, on.started_at.timestamp())
            self.held.events = [e for e in self.held.events if e[0] >= self.active.started]
            # Its header's size: the terminal's when what it records began.
            size = self.held.opening if self.held.events else self.size
            self._queue(self._join(self.active, size))
            if self.held.size >= PART_BYTES:
                self._hand_over()
        if self.active is None:
            self.held = _Held()

    def _hand_over(self, final: bool = False) -> None:
        """What is held becomes the active recording's next part, queued for the writer."""
        active, held = self.active, self.held
        self.held = _Held()
        if active is None or active.dropped:
            return
        lines = bytearray()
        start = end = active.last
        for at, code, data in held.events:
            at = max(active.last, at - active.started)
            active.last = end = at
            lines += asciicast.event(at, code, data)
        if held.events:
            start = max(0.0, held.events[0][0] - active.started)
        if not lines and not final:
            return
        if self.pending + len(lines) > MAX_PENDING:
            active.dropped = True
            self._queue(self._fail(active, "the recordings' store fell behind the terminal"))
            return
        seq, active.seq = active.seq, active.seq + 1
        self.pending += len(lines)
        self._queue(self._part(active, seq, bytes(lines), start, end, final))

    # -- the writer: one job at a time, in order, on the relay's threads -------------------------

    def _queue(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            await job

        self.jobs.put_nowait(run)

    async def _write(self) -> None:
        while (job := await self.jobs.get()) is not None:
            await job()

    async def _join(self, active: _Active, size: tuple[int, int]) -> None:
        try:
            joined = await self.blocking(recordings().join, active.id, *size, self.stream)
        except Exception as exc:
            log.exception("recording %s: could not join it", active.id)
            await self._fail(active, f"the relay could not join it: {type(exc).__name__}")
            return
        if joined is None:  # stopped (or failed) before this stream joined, or full
            active.dropped = True

    async def _part(
        self, active: _Active, seq: int, lines: bytes, start: float, end: float, final: bool
    ) -> None:
        try:
            if not active.dropped:
                await self.blocking(
                    recordings().write, active.id, self.stream, seq, lines, start, end, final
                )
        except Exception as exc:
            log.exception("recording %s: a part not stored", active.id)
            await self._fail(active, f"a part could not be stored: {type(exc).__name__}")
        finally:
            self.pending -= len(lines)
        if not final and self.active is active and self.held.size >= PART_BYTES:
            self._hand_over()  # what came while it was written

    async def _fail(self, active: _Active, why: str) -> None:
        active.dropped = True
        if self.active is active:
            self.active = None
            self.held = _Held()
        with contextlib.suppress(Exception):
            await self.blocking(recordings().fail, active.id, why)


def attach(session_id: str, query: dict[str, str | None], blocking: Blocking) -> Recorder:
    """A recorder for a terminal stream opened with `query` (its cols and rows)."""

    def size(name: str, default: int) -> int:
        try:
            return max(1, min(1000, int(query.get(name) or default)))
        except ValueError:
            return default

    return Recorder(session_id, size("cols", 80), size("rows", 24), blocking)
