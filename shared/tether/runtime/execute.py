"""Run one shell command with a timeout and capped output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

from tether.core.models import ExecResult

MAX_OUTPUT = 1 << 20  # bytes kept per stream
# After the shell exits, how long to keep reading from children that still hold its pipes.
DRAIN_GRACE = 0.2


class _Capped:
    """Keeps the first `cap` bytes of a stream and counts the rest; what was read survives
    the reader being cancelled."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = self.cap - len(self.kept)
            self.kept += chunk[:room]
            self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[tether: output truncated, {self.dropped} bytes omitted]\n"
        return text


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


async def run_command(
    command: str, cwd: str, timeout: float, env: dict[str, str] | None = None, cap: int = MAX_OUTPUT
) -> ExecResult:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.subprocess_exec(
        lambda: ExitProtocol(loop),
        "/bin/bash",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    assert proto.stdout is not None and proto.stderr is not None
    out, err = _Capped(cap), _Capped(cap)
    readers = [
        asyncio.ensure_future(out.read(proto.stdout)),
        asyncio.ensure_future(err.read(proto.stderr)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(proto.exited), timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(transport.get_pid(), signal.SIGKILL)
        await proto.exited
    _, pending = await asyncio.wait(readers, timeout=DRAIN_GRACE)
    for task in pending:  # a background child still holds the pipe: stop reading it
        task.cancel()
    transport.close()
    returncode = transport.get_returncode()
    code = 124 if timed_out else (returncode if returncode is not None else -1)
    stderr = err.text()
    if timed_out:
        stderr += f"\n[tether: command timed out after {timeout:g}s]\n"
    return ExecResult(
        stdout=out.text(),
        stderr=stderr,
        returncode=code,
        success=code == 0 and not timed_out,
        timed_out=timed_out,
        truncated=bool(out.dropped or err.dropped),
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
