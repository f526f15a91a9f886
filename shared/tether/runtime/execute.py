"""Run one shell command with a timeout and capped output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from tether.core.models import ExecResult

MAX_OUTPUT = 1 << 20  # bytes kept per stream
# After the shell exits, how long to keep reading from children that still hold its pipes.
DRAIN_GRACE = 0.2


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, int]:
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        kept += chunk[:room]
        dropped += max(0, len(chunk) - room)
    return bytes(kept), dropped


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[tether: output truncated, {dropped} bytes omitted]\n"
    return text


async def run_command(
    command: str, cwd: str, timeout: float, env: dict[str, str] | None = None, cap: int = MAX_OUTPUT
) -> ExecResult:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/bin/bash",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.ensure_future(_read_capped(proc.stdout, cap)),
        asyncio.ensure_future(_read_capped(proc.stderr, cap)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    done, pending = await asyncio.wait(readers, timeout=DRAIN_GRACE)
    for task in pending:  # a background child still holds the pipe: stop reading it
        task.cancel()
    (out, out_dropped), (err, err_dropped) = (
        t.result() if t in done else (b"", 0) for t in readers
    )
    code = 124 if timed_out else (proc.returncode if proc.returncode is not None else -1)
    stderr = _text(err, err_dropped)
    if timed_out:
        stderr += f"\n[tether: command timed out after {timeout:g}s]\n"
    return ExecResult(
        stdout=_text(out, out_dropped),
        stderr=stderr,
        returncode=code,
        success=code == 0 and not timed_out,
        timed_out=timed_out,
        truncated=bool(out_dropped or err_dropped),
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
