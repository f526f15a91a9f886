"""Create -> first command: a session created and its first command's answer back, through the
HTTP API on the embedded default, from the warm pool and cold (two `tether up`s, one keeping
a pool of the shell template), next to a bare `python3 -c pass` measured in the same run.
Prints figures; asserts only correctness.

Goal (issue 15): from the pool p50 <= 2x the bare Python start; cold <= 0.25 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.bench.test_exec_bench import pct
from tests.e2e.conftest import Server, start_server

ROUNDS = int(os.environ.get("TETHER_BENCH_READY_ROUNDS", "13"))


def warm(server: Server) -> int:
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    return int(health["workspaces"]["warm_pool"]["ready"])


def until(what: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def first_command(client: httpx.Client) -> float:
    """ms from the create's request to the first command's answer; the session is deleted."""
    started = time.perf_counter()
    session = client.post("/v1/sessions", json={"template": "shell"}).json()
    ran = client.post(f"/v1/sessions/{session['id']}/execute", json={"command": "echo ready"})
    took = (time.perf_counter() - started) * 1000
    assert session["status"] == "running" and ran.json()["stdout"] == "ready\n", ran.text
    client.delete(f"/v1/sessions/{session['id']}")
    return took


def bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1000


@pytest.mark.timeout(900)
def test_create_to_first_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pooled = start_server(tmp_path / "pooled", {"TETHER_WARM_POOL": "shell=1"})
    cold = start_server(tmp_path / "cold")
    times: dict[str, list[float]] = {"from the pool": [], "cold": [], "bare python3 -c pass": []}
    try:
        to_pooled, to_cold = (
            httpx.Client(base_url=s.url, headers={"X-API-Key": s.key}, timeout=60)
            for s in (pooled, cold)
        )
        first_command(to_pooled)  # the pool learns the template from its first session
        first_command(to_cold)
        for _ in range(ROUNDS):  # interleaved: machine noise hits every series alike
            until(lambda: warm(pooled) == 1)
            times["from the pool"].append(first_command(to_pooled))
            times["cold"].append(first_command(to_cold))
            times["bare python3 -c pass"].append(bare_python())
        to_pooled.close()
        to_cold.close()
    finally:
        pooled.stop()
        cold.stop()
    base = pct(times["bare python3 -c pass"], 0.5)
    with capsys.disabled():
        print(f"\n\ncreate -> first command, {ROUNDS} interleaved rounds (ms)")
        for name, xs in times.items():
            print(f"  {name:<22} p50 {pct(xs, 0.5):7.1f}  p90 {pct(xs, 0.9):7.1f}"
                  f"  ({pct(xs, 0.5) / base:.2f}x bare python)")  # fmt: skip
        print("  goals: from the pool p50 <= 2.00x bare python; cold p50 <= 250 ms\n")
