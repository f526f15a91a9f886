"""A shell command whose output is read as it comes: what streamed exec and background
processes share.

The command's pipes are always read (a command nobody listens to never stalls on a full pipe);
what it prints is kept as chunks of text, the last `KEEP` bytes, for readers that follow at
their own pace. A reader that falls further behind than that misses what was dropped. Streamed
exec has one reader and must lose nothing: its `Output` holds instead, and the command's pipes
are paused (the command blocks on its writes) until the reader catches up.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import math
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from tether.runtime.activity import Activity, Kind
from tether.runtime.execute import DRAIN_GRACE
from tether.runtime.main_process import end_group

KEEP = 1 << 20  # bytes of output kept per command
MAX_CHUNKS = 16384  # and chunks: a command printing a byte at a time costs bounded memory too
BATCH = 256 << 10  # bytes a reader takes from the ring at once
SIGNALS = {
    "TERM": signal.SIGTERM,
    "KILL": signal.SIGKILL,
    "INT": signal.SIGINT,
    "HUP": signal.SIGHUP,
}
STREAMS = {1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class Chunk:
    seq: int
    stream: str  # "stdout" | "stderr"
    data: str
    size: int  # the bytes it was decoded from

    def event(self) -> tuple[str, dict[str, object]]:
        return self.stream, {"data": self.data}


@dataclass(frozen=True)
class Exit:
    exit_code: int  # a command ended by a signal: 128 + its number, as a shell reports it
    timed_out: bool
    duration_ms: float

    def event(self) -> tuple[str, dict[str, object]]:
        return "exit", {
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True)
class Spec:
    """What to run: the parsed body of an exec or process request."""

    command: str
    cwd: str
    env: dict[str, str]
    timeout: float | None = None
    stdin: str | None = None


def parse_spec(body: Mapping[str, object], home: str, *, timeout: bool) -> Spec:
    """ValueError names the field that is wrong."""
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("command: required, a non-empty string")
    if "\x00" in command:
        raise ValueError("command: must not contain NUL")
    env = body.get("env")
    if env is None:
        env = {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\x00" not in k + v
        for k, v in env.items()
    ):
        raise ValueError("env: must map names (no '=' or NUL) to strings")
    cwd = body.get("cwd")
    if cwd is None:
        cwd = home
    if not isinstance(cwd, str) or not cwd or "\x00" in cwd:
        raise ValueError("cwd: must be a non-empty path")
    limit: float | None = None
    if timeout:
        given = body.get("timeout", 120)
        if given is None:
            given = 120
        if isinstance(given, bool) or not isinstance(given, int | float):
            raise ValueError("timeout: must be a number of seconds")
        limit = float(given)
        if not (0 < limit <= 7 * 86400) or math.isnan(limit):
            raise ValueError("timeout: must be more than 0 and at most a week")
    stdin = body.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise ValueError("stdin: must be a string")
    return Spec(command, os.path.normpath(os.path.join(home, cwd)), env, limit, stdin)


class Output:
    """What a command printed, as numbered chunks, and its exit once it has one."""

    def __init__(self, keep: int = KEEP, hold: bool = False) -> None:
        self.keep, self.hold = keep, hold
        self.chunks: deque[Chunk] = deque()
        self.size = 0
        self.next = 0
        self.exit: Exit | None = None
        self.full = False  # hold: the reader is `keep` behind; the command's reading is paused
        self.on_full: Callable[[bool], None] = lambda full: None
        self._changed = asyncio.Event()

    def add(self, stream: str, data: str, size: int) -> None:
        self.chunks.append(Chunk(self.next, stream, data, size))
        self.next += 1
        self.size += size
        if self.hold:
            if self.size >= self.keep and not self.full:
                self.full = True
                self.on_full(True)
        else:
            while self.size > self.keep or len(self.chunks) > MAX_CHUNKS:
                self.size -= self.chunks.popleft().size
        self._wake()

    def end(self, exit: Exit) -> None:
        self.exit = exit
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _release(self, upto: int) -> None:
        while self.chunks and self.chunks[0].seq < upto:
            self.size -= self.chunks.popleft().size
        if self.full and self.size <= self.keep // 2:
            self.full = False
            self.on_full(False)

    async def follow(self, live: bool = True) -> AsyncIterator[Chunk | Exit]:
        """What is kept, then (`live`) each chunk as it comes, then the exit; without `live`,
        the exit only if there is one by the time what is kept has been read."""
        cursor = self.chunks[0].seq if self.chunks else self.next
        stop = None if live else self.next  # a chatty command must not keep it going
        while True:
            changed = self._changed
            first = self.chunks[0].seq if self.chunks else self.next
            cursor = max(cursor, first)  # what was dropped while this reader was slow
            batch, size = [], 0
            for chunk in itertools.islice(self.chunks, cursor - first, None):
                if stop is not None and chunk.seq >= stop:
                    break
                batch.append(chunk)
                size += chunk.size
                if size >= BATCH:
                    break
            for chunk in batch:
                yield chunk
                cursor = chunk.seq + 1
            if self.hold:
                self._release(cursor)
            if batch:
                continue
            if self.exit is not None and cursor >= self.next:
                yield self.exit
                return
            if not live:
                return
            await changed.wait()


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self, command: LiveCommand) -> None:
        self.command = command

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self.command._received(fd, bytes(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.command._pipe_closed(fd)

    def process_exited(self) -> None:
        self.command._shell_exited()

    def pause_writing(self) -> None:  # its stdin's buffer is past the high-water mark
        self.command.stdin_writable.clear()

    def resume_writing(self) -> None:
        self.command.stdin_writable.set()


class LiveCommand:
    """`/bin/bash -c command` in its own process group, its output read into `output`."""

    transport: asyncio.SubprocessTransport

    def __init__(self, spec: Spec, output: Output, end_group_on_exit: bool) -> None:
        self.spec, self.output = spec, output
        self.end_group_on_exit = end_group_on_exit
        self.pid = 0
        self.started = time.perf_counter()
        self.started_at = datetime.now(UTC)
        self.ended_at: datetime | None = None
        self.timed_out = False
        self.done = asyncio.Event()
        self._decoders = {
            fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in STREAMS
        }
        self._open = set(STREAMS)
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stdin_open = False
        self.stdin_writable = asyncio.Event()
        self.stdin_writable.set()
        self._started = self._exited = False
        output.on_full = self._pause

    @classmethod
    async def start(
        cls, spec: Spec, *, stdin: bool, hold: bool = False, end_group_on_exit: bool = False
    ) -> LiveCommand:
        """OSError if it cannot start (a missing cwd: FileNotFoundError)."""
        self = cls(spec, Output(hold=hold), end_group_on_exit)
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.subprocess_exec(
            lambda: _Pipes(self),
            "/bin/bash",
            "-c",
            spec.command,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            stdin=subprocess.PIPE if stdin or spec.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a kill reaches its children
        )
        self.pid = self.transport.get_pid()
        self._stdin_open = self.transport.get_pipe_transport(0) is not None
        self._started = True
        if self.output.full:
            self._pause(True)
        if spec.stdin is not None:
            self.write_stdin(spec.stdin.encode(), eof=True)
        if spec.timeout is not None:
            handle = loop.call_later(spec.timeout, self._time_out)
            self.done_callback(handle.cancel)
        if self.transport.get_returncode() is not None:  # exited before we looked
            self._shell_exited()
        return self

    async def stdin_drained(self) -> None:
        """Returns once the command has taken what was written to its stdin (most of it), or
        ended."""
        if not self.stdin_writable.is_set():
            wait = [asyncio.ensure_future(e.wait()) for e in (self.stdin_writable, self.done)]
            try:
                await asyncio.wait(wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in wait:
                    task.cancel()

    def counted(self, activity: Activity, kind: Kind) -> None:
        """Counts as running `kind` in `activity` until it ends."""
        activity.began(kind)
        self.done_callback(lambda: activity.ended(kind))

    def done_callback(self, callback: Callable[[], object]) -> None:
        async def when_done() -> None:
            await self.done.wait()
            callback()

        self._tasks.append(asyncio.ensure_future(when_done()))

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    @property
    def stdin_open(self) -> bool:
        return self._stdin_open and self.running

    def _stdin(self) -> asyncio.WriteTransport | None:
        return cast(asyncio.WriteTransport | None, self.transport.get_pipe_transport(0))

    def stdin_backlog(self) -> int:
        pipe = self._stdin()
        return pipe.get_write_buffer_size() if pipe is not None else 0

    def write_stdin(self, data: bytes, eof: bool = False) -> None:
        pipe = self._stdin()
        if pipe is None or not self._stdin_open or pipe.is_closing():
            return
        if data:
            pipe.write(data)
        if eof:
            self._stdin_open = False
            pipe.close()

    def signal(self, number: int) -> bool:
        """Signals the process group; False once it is gone."""
        try:
            os.killpg(self.pid, number)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """Kills the group; whatever a streamed exec held for its reader is dropped from now on
        (the reader has gone), so the pipes are read to their end."""
        if self.running:
            self.signal(signal.SIGKILL)
        self.output.hold = False
        if self.output.full:
            self.output.full = False
            self._pause(False)

    async def stop(self) -> None:
        """TERM to the group, KILL to what is left after a grace; returns once it has ended."""
        if self.running:
            await end_group(self.pid)
            await self.done.wait()

    def _time_out(self) -> None:
        if self.running:
            self.timed_out = True
            self.kill()

    def _pause(self, full: bool) -> None:
        if not self._started:
            return  # start() pauses once it has the pipes
        for fd in self._open:
            pipe = cast(asyncio.ReadTransport | None, self.transport.get_pipe_transport(fd))
            if pipe is None:
                continue
            if full:
                pipe.pause_reading()
            else:
                pipe.resume_reading()
        self._changed.set()

    def _received(self, fd: int, data: bytes) -> None:
        text = self._decoders[fd].decode(data)
        if text:
            self.output.add(STREAMS[fd], text, len(data))

    def _pipe_closed(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            if tail := self._decoders[fd].decode(b"", final=True):
                self.output.add(STREAMS[fd], tail, 0)
            self._changed.set()
        elif fd == 0:
            self._stdin_open = False
            self.stdin_writable.set()  # nothing to wait for any more

    def _shell_exited(self) -> None:
        if self._started and not self._exited:  # start() calls again if it exited before
            self._exited = True
            self._tasks.append(asyncio.ensure_future(self._finish()))

    async def _finish(self) -> None:
        if self.end_group_on_exit:  # what the shell left running ends with it
            await end_group(self.pid)
        await self._drain()
        self.stdin_writable.set()
        code = self.transport.get_returncode()
        assert code is not None
        self.ended_at = datetime.now(UTC)
        exit_code = 124 if self.timed_out else (128 - code if code < 0 else code)
        duration = round((time.perf_counter() - self.started) * 1000, 3)
        for fd in list(self._open):  # a child still holds it: what it sent so far is kept
            self._pipe_closed(fd)
        self.transport.close()
        self.output.end(Exit(exit_code, self.timed_out, duration))
        self.done.set()

    async def _drain(self) -> None:
        """Reads on after the shell's exit until its pipes close: for `DRAIN_GRACE` when a child
        it left holds them, and for as long as the reader takes while reading is paused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_GRACE
        while self._open:
            self._changed.clear()
            if self.output.full:
                await self._changed.wait()
                deadline = loop.time() + DRAIN_GRACE
                continue
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
