"""Run one shell command with a timeout and capped output.

The command is watched from a plain thread (a selector over its pipes and a pidfd), not from
an event loop: for a short command the loop's futures and callbacks cost more than the
spawn. The exec channel calls `run_command` on its connection's thread; the HTTP API awaits
`run_command_async`, which runs the same on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

# Bytes kept per stream: both streams fit one Firestore document (1 MiB) with the command record.
MAX_OUTPUT = 256 << 10
# After the shell exits, how long to keep reading from children that still hold its pipes.
DRAIN_GRACE = 0.2
# Without a pidfd, how often to look whether the shell has exited while its pipes stay open.
_POLL = 0.05

_waiters = ThreadPoolExecutor(64, thread_name_prefix="exec")


class _Capped:
    """Keeps the first `cap` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

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


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when `pid` exits (None on Linux < 5.3, some sandboxes)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    started: float

    def kill(self) -> None:
        _kill_group(self.proc.pid)


def start(command: str, cwd: str, env: dict[str, str] | None = None) -> Running:
    """Spawns `command` with bash, in its own process group (a timeout kills its children)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["/bin/bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return Running(proc, started)


@dataclass(frozen=True)
class Outcome:
    """A command's result, as `tether.core.models.ExecResult` reads it (a dataclass: the
    runtime starts in every workspace, and pydantic's models would add a tenth of a second)."""

    stdout: str
    stderr: str
    returncode: int
    success: bool
    timed_out: bool
    truncated: bool
    duration_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def finish(running: Running, timeout: float, cap: int = MAX_OUTPUT) -> Outcome:
    """Blocks until the shell exits (killed at `timeout`), reading both pipes as it goes; a
    background child still holding them is read for `DRAIN_GRACE` more, not waited for."""
    proc = running.proc
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capped(cap), _Capped(cap)
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline = time.monotonic() + timeout
    timed_out = False
    pidfd = _pidfd(proc.pid)
    with selectors.PollSelector() as selector:  # poll(2): no descriptor to make per command
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)

        def read(wait: float) -> None:
            for key, _ in selector.select(max(wait, 0)):
                if key.fd in streams:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        streams[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
                        del streams[key.fd]

        try:
            while proc.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    _kill_group(proc.pid)
                    proc.wait()
                elif pidfd is not None:
                    read(remaining)
                elif streams:
                    read(min(remaining, _POLL))
                else:  # no pidfd, pipes closed: only the exit is left to wait for
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(remaining)
            if pidfd is not None:
                selector.unregister(pidfd)
            grace = time.monotonic() + DRAIN_GRACE
            while streams and (left := grace - time.monotonic()) > 0:
                read(left)
        finally:
            if pidfd is not None:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
    code = 124 if timed_out else proc.returncode
    stderr = err.text()
    if timed_out:
        stderr += f"\n[tether: command timed out after {timeout:g}s]\n"
    return Outcome(
        stdout=out.text(),
        stderr=stderr,
        returncode=code,
        success=code == 0 and not timed_out,
        timed_out=timed_out,
        truncated=bool(out.dropped or err.dropped),
        duration_ms=round((time.perf_counter() - running.started) * 1000, 3),
    )


def run_command(
    command: str, cwd: str, timeout: float, env: dict[str, str] | None = None, cap: int = MAX_OUTPUT
) -> Outcome:
    """Raises OSError if the shell cannot start (`could_not_start` says why)."""
    return finish(start(command, cwd, env), timeout, cap)


def could_not_start(exc: OSError) -> str:
    return f"command: could not start: {exc.strerror or exc}"


async def run_command_async(
    command: str, cwd: str, timeout: float, env: dict[str, str] | None = None, cap: int = MAX_OUTPUT
) -> Outcome:
    """`run_command` for an event loop; cancelling it kills the command."""
    running = start(command, cwd, env)
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _waiters, finish, running, timeout, cap
        )
    except asyncio.CancelledError:  # the caller went away: so does the command
        running.kill()
        raise


def exec_request(body: object) -> tuple[str, float, int]:
    """The command, timeout and output cap of an exec request (`{"command", "timeout",
    "max_output"}`); ValueError names the field that is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("command: required")
    if "\x00" in command:  # no argument can carry one
        raise ValueError("command: must not contain NUL")
    try:
        timeout = float(body.get("timeout", 120))
    except (TypeError, ValueError):
        raise ValueError("timeout: must be a number") from None
    try:
        cap = int(body.get("max_output", MAX_OUTPUT))
    except (TypeError, ValueError):
        raise ValueError("max_output: must be an integer") from None
    return command, timeout, cap
