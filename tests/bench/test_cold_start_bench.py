"""Cold start of the function targets, next to functions-framework alone (serving a hello-world
function), measured in the same run: the time to import and load each target as the framework
does (goal <= 1.25x), and the time from process start to the first 200. Prints figures;
asserts only that every target answered correctly.
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
ROUNDS = int(os.environ.get("TETHER_BENCH_COLD_ROUNDS", "7"))
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


def import_seconds(code: str) -> float:
    timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", timed], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return float(out.split()[-1])


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


def test_cold_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_API_KEY": API_KEY}
    bootstrap.seed(bootstrap.build(Settings(home=home, api_key=API_KEY)))  # what deploy does
    hello = tmp_path / "hello.py"
    hello.write_text(HELLO)

    imports: dict[str, list[float]] = {"hello world": []} | {t: [] for t in FIRST_REQUEST}
    starts: dict[str, list[float]] = {"hello world": []} | {t: [] for t in FIRST_REQUEST}
    for _ in range(ROUNDS):  # interleaved, so machine noise hits every series alike
        for target, source in [("hello", hello), *((t, SOURCE) for t in FIRST_REQUEST)]:
            load = f"functions_framework.create_app({target!r}, {str(source)!r})"
            seconds = import_seconds(f"import functions_framework; {load}")
            imports["hello world" if target == "hello" else target].append(seconds)
        took, response = first_200("hello", hello, env, ("GET", "/", None))
        assert response.status_code == 200 and response.text == "ok"
        starts["hello world"].append(took)
        for target, request in FIRST_REQUEST.items():
            took, response = first_200(target, SOURCE, env, request)
            assert response.status_code == 200, (target, response.text)
            starts[target].append(took)
    body = json.loads(first_200("health", SOURCE, env, FIRST_REQUEST["health"])[1].text)
    assert body["status"] == "healthy"

    base_import = statistics.median(imports["hello world"])
    base_start = statistics.median(starts["hello world"])
    with capsys.disabled():
        print(f"\n\ncold start, median of {ROUNDS} interleaved rounds")
        for name, xs in imports.items():
            m = statistics.median(xs)
            print(f"  import + load {name:<12} {m * 1000:7.1f} ms   {m / base_import:5.2f}x"
                  f" hello world (goal <= 1.25x)")  # fmt: skip
        for name, xs in starts.items():
            m = statistics.median(xs)
            print(f"  start -> first 200 {name:<12} {m * 1000:7.1f} ms   {m / base_start:5.2f}x"
                  f" hello world")  # fmt: skip
        print()
