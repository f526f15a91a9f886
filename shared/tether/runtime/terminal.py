"""An interactive terminal over a WebSocket: a login shell on a PTY inside the workspace.

Frames: binary from the client are keystrokes; text from the client is JSON control
(`{"type": "resize", "cols": C, "rows": R}`); binary to the client is terminal output. Bytes
either way are the workspace's activity; a terminal open at a quiet prompt is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import termios

from aiohttp import WSMsgType, web

from tether.runtime import websockets
from tether.runtime.activity import Activity

READ_CHUNK = 65536
DRAIN_READS = 16  # reads after the shell's exit: what it wrote, not a chatty job's flood
QUIET = 0.25  # seconds without output, after the shell's exit, that end its terminal


class ShellOutput:
    """What a shell writes to its PTY's `leader` until it has `exited` and that is read, even
    while a job it left in the background holds the PTY open (then no end of file comes)."""

    def __init__(self, leader: int, exited: asyncio.Future[object]) -> None:
        self.leader, self.exited = leader, exited
        self.readable = asyncio.Event()
        asyncio.get_running_loop().add_reader(leader, self.readable.set)
        exited.add_done_callback(lambda _: self.readable.set())
        self.left = DRAIN_READS

    async def read(self) -> bytes:
        """The next chunk, or b"" at the end."""
        while self.left > 0:
            if self.exited.done():
                # Read on without waiting: the shell may have exited before its last output
                # was read, and a job holding the PTY open gives no signal that it is all read.
                self.left -= 1
            else:
                await self.readable.wait()
                self.readable.clear()
            try:
                return os.read(self.leader, READ_CHUNK)  # b"": the PTY has closed
            except BlockingIOError:
                if self.exited.done() and not await self._more_soon():
                    return b""
            except OSError:  # EIO: every process that had the PTY open is gone
                return b""
        return b""

    async def _more_soon(self) -> bool:
        """Whether more comes within `QUIET` seconds: a PTY passes bytes on from a kernel
        worker, a moment after the shell wrote them, and the shell may be gone by then."""
        self.readable.clear()
        try:
            await asyncio.wait_for(self.readable.wait(), QUIET)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.leader)
        self.exited.cancel()


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _size(value: str | None, default: int) -> int:
    try:
        return max(1, min(1000, int(value or default)))
    except ValueError:
        return default


async def terminal(request: web.Request, home: str, activity: Activity) -> web.WebSocketResponse:
    ws = await websockets.accept(request, max_msg_size=1 << 20)
    leader, follower = pty.openpty()
    set_size(leader, _size(request.query.get("cols"), 80), _size(request.query.get("rows"), 24))
    env = dict(os.environ, TERM="xterm-256color", HOME=home)
    # `setsid -c` makes the PTY the shell's controlling terminal, so job control and ^C work.
    proc = await asyncio.create_subprocess_exec(
        "setsid", "-c", "/bin/bash", "-l",
        stdin=follower, stdout=follower, stderr=follower, cwd=home, env=env,
    )  # fmt: skip
    os.close(follower)
    os.set_blocking(leader, False)

    async def pump_out() -> None:
        """PTY → client. One chunk in flight: a slow reader slows the shell, never our memory."""
        output = ShellOutput(leader, asyncio.ensure_future(proc.wait()))
        try:
            while data := await output.read():
                activity.note("terminal")  # output: something runs, or someone types
                await ws.send_bytes(data)
        finally:
            output.close()

    async def pump_in() -> None:
        """Client → PTY: keystrokes, and resize requests."""
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                activity.note("terminal")  # keystrokes (a resize, or a ping, is none)
                await _write_all(leader, msg.data)
            elif msg.type is WSMsgType.TEXT:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    control = json.loads(msg.data)
                    if control.get("type") == "resize":
                        set_size(leader, _size(str(control["cols"]), 80),
                                 _size(str(control["rows"]), 24))  # fmt: skip

    # Whichever ends first (the shell exits, or the client leaves) ends the other.
    pumps = [asyncio.ensure_future(pump_out()), asyncio.ensure_future(pump_in())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGHUP)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 2)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        os.close(leader)
        await ws.close()
    return ws


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.005)  # the shell is not reading: wait, keeping nothing extra
            continue
        view = view[written:]
