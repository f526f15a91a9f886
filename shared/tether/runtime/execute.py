"""Run one shell command with a timeout and capped output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from typing import IO

from tether.core.models import ExecResult

# Bytes kept per stream: both streams fit one Firestore document (1 MiB) with the command record.
MAX_OUTPUT = 256 << 10
# After the shell exits, how long to keep reading from children that still hold its pipes.
DRAIN_GRACE = 0.2


class _Capped:
    """Reads a pipe from the event loop, keeping the first `cap` bytes and counting the rest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: IO[bytes], cap: int) -> None:
        self.loop, self.fd, self.cap = loop, pipe.fileno(), cap
        self.kept = bytearray()
        self.dropped = 0
        self.closed: asyncio.Future[None] = loop.create_future()
        os.set_blocking(self.fd, False)
        loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.stop()
            return
        room = self.cap - len(self.kept)
        self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    def stop(self) -> None:
        self.loop.remove_reader(self.fd)
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        encoded = text.encode()
        if len(encoded) > self.cap:  # a replaced bad byte takes 3 bytes: keep within the cap
            text = encoded[: self.cap].decode("utf-8", errors="ignore")
        if self.dropped:
            text += f"\n[tether: output truncated, {self.dropped} bytes omitted]\n"
        return text


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _exited(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """Resolves with the shell's exit status when it exits, even while a background child
    still holds its pipes. A pidfd tells the loop directly; without one (Linux < 5.3, some
    sandboxes) a worker thread waits."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return loop.run_in_executor(None, proc.wait)
    done: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        done.set_result(proc.wait())

    loop.add_reader(pidfd, reap)
    return done


def exec_request(body: object) -> tuple[str, float, int]:
    """The command, timeout and output cap of an exec request (`{"command", "timeout",
    "max_output"}`); ValueError names the field that is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("command: required")
    try:
        timeout = float(body.get("timeout", 120))
    except (TypeError, ValueError):
        raise ValueError("timeout: must be a number") from None
    try:
        cap = int(body.get("max_output", MAX_OUTPUT))
    except (TypeError, ValueError):
        raise ValueError("max_output: must be an integer") from None
    return command, timeout, cap


async def run_command(
    command: str, cwd: str, timeout: float, env: dict[str, str] | None = None, cap: int = MAX_OUTPUT
) -> ExecResult:
    """Runs `command` with bash. Spawned directly and watched with loop readers: asyncio's
    subprocess transports cost several times the CPU of the spawn itself."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(
        ["/bin/bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capped(loop, proc.stdout, cap), _Capped(loop, proc.stderr, cap)
    exited = _exited(loop, proc)
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
        returncode = await exited
        # A background child may still hold the pipes: read what comes within the grace.
        await asyncio.wait([out.closed, err.closed], timeout=DRAIN_GRACE)
    except asyncio.CancelledError:  # the caller went away: so does the command
        _kill_group(proc.pid)
        raise
    finally:
        for stream, pipe in ((out, proc.stdout), (err, proc.stderr)):
            stream.stop()
            pipe.close()
    code = 124 if timed_out else returncode
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
