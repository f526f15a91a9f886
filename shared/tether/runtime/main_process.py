"""The workspace's main process: the template's shell command, run beside the runtime, its
output (stdout and stderr, in order) appended to the session log line by line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from tether.runtime.session_log import MAX_LINE, LogWriter

STOP_GRACE = 1.5  # seconds between SIGTERM and SIGKILL; the provisioner allows the runtime 3


class ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells when the shell exits, even while a background child still holds its pipes
    (`Process.wait()` also waits for the pipes to close)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=1 << 16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class MainProcess:
    def __init__(self, command: str, home: str, log: LogWriter) -> None:
        self.command, self.home, self.log = command, home, log
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, self.proto = await loop.subprocess_exec(
            lambda: ExitProtocol(loop),
            "/bin/bash",
            "-c",
            self.command,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe keeps stdout and stderr lines in order
            start_new_session=True,  # its own process group, so stopping reaches its children
        )
        self.pid = self.transport.get_pid()
        self.log.write(f"[tether] main process started: pid {self.pid}")
        reader = asyncio.create_task(self._read())
        self._tasks = [reader, asyncio.create_task(self._watch(reader))]

    async def _read(self) -> None:
        assert self.proto.stdout is not None
        pending = b""
        while chunk := await self.proto.stdout.read(MAX_LINE):
            *lines, pending = (pending + chunk).split(b"\n")
            while len(pending) >= MAX_LINE:  # no newline in sight: split the line
                lines.append(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
            self.log.write(*(_text(line) for line in lines))
        if pending:
            self.log.write(_text(pending))

    async def _watch(self, reader: asyncio.Task[None]) -> None:
        # The shell's exit, not its pipe's end (which a background child can hold open).
        await self.proto.exited
        code = self.transport.get_returncode()
        assert code is not None
        # Let the reader log the last output first, unless a background child holds the pipe.
        await asyncio.wait([reader], timeout=0.2)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        self.log.write(f"[tether] main process {how}")
        await self._end_group()  # what the shell left running ends with it

    async def stop(self) -> None:
        """Stops the command and whatever it started; returns once they are gone."""
        if not self._tasks:
            return
        if self.transport.get_returncode() is None:
            self.log.write("[tether] stopping main process")
        await self._end_group()
        await asyncio.wait(self._tasks, timeout=0.5)  # the watcher logs the exit
        for task in self._tasks:
            task.cancel()
        self.transport.close()

    async def _end_group(self) -> None:
        await end_group(self.pid)


async def end_group(pgid: int) -> None:
    """SIGTERM to the process group, SIGKILL to whatever is left after STOP_GRACE. A group
    that is gone is not signalled again (its id could be reused by then)."""
    loop = asyncio.get_running_loop()
    if not _killpg(pgid, signal.SIGTERM):
        return
    deadline = loop.time() + STOP_GRACE
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        if not _killpg(pgid, 0):
            return
    _killpg(pgid, signal.SIGKILL)


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", errors="replace")


def _killpg(pgid: int, sig: int) -> bool:
    """Signals the group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
