"""The runtime's command runner: capped output, timeouts that kill the whole group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tether.provision.uds import UnixJsonClient
from tether.runtime import exec_channel
from tether.runtime.execute import run_command, run_command_async


def run(command: str, tmp_path: Path, timeout: float = 10, cap: int = 1 << 20):  # type: ignore[no-untyped-def]
    return run_command(command, str(tmp_path), timeout, cap=cap)


def test_output_over_the_cap_is_truncated_with_a_marker(tmp_path: Path) -> None:
    r = run("head -c 5000 /dev/zero | tr '\\0' x", tmp_path, cap=1000)
    assert r.truncated is True
    assert r.stdout.startswith("x" * 1000)
    assert "[tether: output truncated, 4000 bytes omitted]" in r.stdout
    assert r.success is True


def test_timeout_kills_children_too(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    started = time.monotonic()
    r = run(f"(sleep 2; touch {marker}) & sleep 30", tmp_path, timeout=0.5)
    assert time.monotonic() - started < 5
    assert r.timed_out is True and r.returncode == 124
    time.sleep(2.5)
    assert not marker.exists(), "a child of a timed-out command kept running"


def test_background_child_holding_the_pipe_does_not_block(tmp_path: Path) -> None:
    started = time.monotonic()
    r = run("sleep 20 & echo started", tmp_path, timeout=10)
    assert time.monotonic() - started < 3
    assert r.stdout == "started\n" and r.returncode == 0


def test_binary_output_is_replaced_not_fatal(tmp_path: Path) -> None:
    r = run("printf '\\xff\\xfeok'", tmp_path)
    assert r.stdout.endswith("ok") and r.success


def test_exec_channel_answers_in_order_and_names_bad_fields(tmp_path: Path) -> None:
    path = str(tmp_path / "x.exec")
    channel = exec_channel.serve(path, str(tmp_path))
    lines = [
        b'{"command": "echo one"}\n',
        b'{"timeout": 5}\n',
        b'{"command": "true", "timeout": "soon"}\n',
        b"not json\n",
        b'{"command": "echo two >&2; exit 3"}\n',
    ]
    try:
        with socket.socket(socket.AF_UNIX) as sock, sock.makefile("rb") as reader:
            sock.connect(path)
            sock.sendall(b"".join(lines))  # pipelined: answers still come back one per line
            answers = [json.loads(reader.readline()) for _ in lines]
    finally:
        channel.close()
    one, no_command, bad_timeout, not_json, two = answers
    assert one["stdout"] == "one\n" and one["success"] is True
    assert no_command == {"detail": "command: required"}
    assert bad_timeout == {"detail": "timeout: must be a number"}
    assert "detail" in not_json
    assert two["stderr"] == "two\n" and two["returncode"] == 3


def test_exec_channel_client_runs_callers_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "x.exec")
    channel = exec_channel.serve(path, str(tmp_path))
    client = UnixJsonClient(path)
    try:
        with ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            results = list(pool.map(lambda i: client.call({"command": f"sleep 1; echo {i}"}, 10),
                                    range(4)))  # fmt: skip
            took = time.monotonic() - started
        assert [r["stdout"] for r in results] == ["0\n", "1\n", "2\n", "3\n"]
        assert took < 2.5  # four one-second commands at once, not one after another
        assert client.call({"command": "echo again"}, 10)["stdout"] == "again\n"  # pooled
    finally:
        client.close()
        channel.close()


def test_a_burst_of_callers_is_queued_not_refused(tmp_path: Path) -> None:
    """Sixteen execs connect while the channel is not accepting yet (busy, say): each waits its
    turn in the listen queue instead of failing with EAGAIN."""
    path = str(tmp_path / "x.exec")
    channel = exec_channel.ExecChannel(path, str(tmp_path))  # listening, not yet accepting
    client = UnixJsonClient(path)
    try:
        with ThreadPoolExecutor(16) as pool:
            calls = [pool.submit(client.call, {"command": f"echo {i}"}, 10) for i in range(16)]
            time.sleep(0.3)  # all sixteen connecting
            threading.Thread(target=channel.serve_forever, daemon=True).start()
            assert [c.result()["stdout"] for c in calls] == [f"{i}\n" for i in range(16)]
    finally:
        client.close()
        channel.close()


def test_without_pidfd_a_thread_waits_for_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")  # Linux < 5.3, or a sandbox without it

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    done = run("echo fine; exit 4", tmp_path)
    assert (done.stdout, done.returncode) == ("fine\n", 4)
    r = run("sleep 30", tmp_path, timeout=0.3)
    assert r.timed_out is True and r.returncode == 124


def test_a_cancelled_command_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "survived"

    async def scenario() -> None:
        task = asyncio.ensure_future(
            run_command_async(f"sleep 1; touch {marker}", str(tmp_path), 30)
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    time.sleep(1.2)
    assert not marker.exists(), "the command kept running after its caller went away"


def test_binary_output_stays_within_the_cap_once_decoded(tmp_path: Path) -> None:
    r = run("head -c 5000 /dev/zero | tr '\\0' '\\377'", tmp_path, cap=1000)  # invalid UTF-8
    kept = r.stdout.split("\n[tether: output truncated")[0]
    assert 990 <= len(kept.encode()) <= 1000 and r.truncated
    # Valid 4-byte characters beside bad bytes: few characters, yet more bytes than the cap.
    mixed = run("for i in $(seq 200); do printf '\\360\\237\\230\\200'; done; "
                "head -c 100 /dev/zero | tr '\\0' '\\377'", tmp_path, cap=900)  # fmt: skip
    assert mixed.success and len(mixed.stdout.encode()) <= 900


def test_a_command_that_cannot_start_is_answered_not_dropped(tmp_path: Path) -> None:
    """A workspace can make its own commands unstartable (its home removed, its process limit
    met by a fork bomb): the exec channel answers why, and serves the next one on the same
    connection once it can start again."""
    home = tmp_path / "home"
    home.mkdir()
    path = str(tmp_path / "x.exec")
    channel = exec_channel.serve(path, str(home))
    client = UnixJsonClient(path)
    try:
        home.rmdir()
        gone = client.call({"command": "true"}, 10)
        assert gone == {"detail": "command: could not start: No such file or directory"}
        home.mkdir()
        assert client.call({"command": "echo back"}, 10)["stdout"] == "back\n"
    finally:
        client.close()
        channel.close()
