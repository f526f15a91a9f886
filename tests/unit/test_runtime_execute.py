"""The runtime's command runner: capped output, timeouts that kill the whole group."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tether.runtime.execute import run_command


def run(command: str, tmp_path: Path, timeout: float = 10, cap: int = 1 << 20):  # type: ignore[no-untyped-def]
    return asyncio.run(run_command(command, str(tmp_path), timeout, cap=cap))


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
