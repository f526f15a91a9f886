"""Cold start of the function targets, measured in the same run next to functions-framework
alone: importing `functions/main.py` (every target's module) next to `import
functions_framework` in the same process (goal <= 1.25x), and each target's time from process
start to its first 200 next to a hello-world function's. Prints figures; asserts only that
every target answered correctly.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tether import bootstrap
from tether.settings import Settings

from tests.e2e.conftest import API_KEY, free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "functions" / "main.py"
ROUNDS = int(os.environ.get("TETHER_BENCH_COLD_ROUNDS", "5"))
HELLO = "def hello(request):\n    return 'ok'\n"
EVENT = {"message": {"data": base64.b64encode(b'{"type": "noop"}').decode()}}

# target -> (method, path, body); each must answer 200 on a fresh instance.
FIRST_REQUEST: dict[str, tuple[str, str, object]] = {
    "health": ("GET", "/health", None),
    "onmemos": ("GET", "/v1/sessions", None),
    "streamspace": ("GET", "/api/v1/templates", None),
    "sweeper": ("POST", "/", None),
    "agent_events": ("POST", "/", EVENT),
}


def first_200(target: str, source: Path, env: dict[str, str], request: tuple[str, str, object]):  # type: ignore[no-untyped-def]
    """Seconds from spawning `functions-framework` to the first 200, and that response."""
    port = free_port()
    method, path, body = request
    headers = {"X-API-Key": API_KEY}
    if target == "agent_events":  # a CloudEvent in binary mode, as Eventarc delivers it
        headers |= {"ce-id": "1", "ce-source": "//pubsub", "ce-specversion": "1.0",
                    "ce-type": "google.cloud.pubsub.topic.v1.messagePublished"}  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "functions_framework", f"--target={target}",
                             f"--source={source}", f"--port={port}"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while True:
                try:
                    response = http.request(method, path, json=body, headers=headers)
                    return time.perf_counter() - started, response
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{target} exited with {proc.returncode}") from None
                    time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.timeout(900)  # 35 process starts: minutes when the machine is busy
def test_cold_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_API_KEY": API_KEY}
    bootstrap.seed(bootstrap.build(Settings(home=home, api_key=API_KEY)))  # what deploy does
    hello = tmp_path / "hello.py"
    hello.write_text(HELLO)

    bare: dict[str, list[float]] = {"functions_framework": [], "functions/main.py": []}
    starts: dict[str, list[float]] = {"hello world": []} | {t: [] for t in FIRST_REQUEST}
    for _ in range(ROUNDS):  # interleaved, so machine noise hits every series alike
        # One process: the framework, then main.py on top (which imports the framework).
        code = (f"import sys, time; sys.path.insert(0, {str(SOURCE.parent)!r}); "
                "t = time.perf_counter(); import functions_framework; "
                "m = time.perf_counter(); import main; e = time.perf_counter(); "
                "print(m - t, e - t)")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        bare["functions_framework"].append(float(out[0]))
        bare["functions/main.py"].append(float(out[1]))
        took, response = first_200("hello", hello, env, ("GET", "/", None))
        assert response.status_code == 200 and response.text == "ok"
        starts["hello world"].append(took)
        for target, request in FIRST_REQUEST.items():
            took, response = first_200(target, SOURCE, env, request)
            assert response.status_code == 200, (target, response.text)
            starts[target].append(took)
    body = json.loads(first_200("health", SOURCE, env, FIRST_REQUEST["health"])[1].text)
    assert body["status"] == "healthy"

    base_bare = statistics.median(bare["functions_framework"])
    base_start = statistics.median(starts["hello world"])
    with capsys.disabled():
        print(f"\n\ncold start, median of {ROUNDS} interleaved rounds")
        for name, xs in bare.items():  # every target is in main.py: importing it is theirs
            m = statistics.median(xs)
            print(f"  import {name:<19} {m * 1000:7.1f} ms   {m / base_bare:5.2f}x"
                  f" import functions_framework (goal <= 1.25x)")  # fmt: skip
        print(f"    (functions/main.py holds every target: {', '.join(FIRST_REQUEST)})")
        for name, xs in starts.items():
            m = statistics.median(xs)
            print(f"  start -> first 200 {name:<12} {m * 1000:7.1f} ms   {m / base_start:5.2f}x"
                  f" hello world")  # fmt: skip
        print()
