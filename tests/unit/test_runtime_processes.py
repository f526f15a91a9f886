"""Background processes on the real runtime app: they outlive the request that started them,
keep their output for later readers, take stdin and signals, and end with the runtime."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.fakes.runtime import RuntimeServer
from tests.unit.test_runtime_streams import gone, sse


def start(runtime: RuntimeServer, command: str, **body: object) -> dict[str, object]:
    r = httpx.post(f"{runtime.url}/processes", json={"command": command, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def output(runtime: RuntimeServer, pid: object, follow: bool = True) -> tuple[str, object]:
    """Everything the stream gave as stdout+stderr, and its exit event (None without one)."""
    text, end = "", None
    url = f"{runtime.url}/processes/{pid}/output" + ("" if follow else "?follow=false")
    with httpx.stream("GET", url, timeout=20) as r:
        assert r.status_code == 200
        for event, data in sse(r.iter_lines()):
            if event == "exit":
                end = data
            else:
                text += str(data["data"])
    return text, end


def wait_for(check: object, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def test_a_process_outlives_its_request_and_ends_with_the_runtime(tmp_path: Path) -> None:
    runtime = RuntimeServer(tmp_path / "home")
    runtime.start()
    try:
        process = start(runtime, "sleep 300 & echo $!; wait", cwd=".")
        assert process["status"] == "running" and process["exit_code"] is None
        assert process["cwd"] == str(runtime.home) and str(process["started_at"]).endswith("Z")
        wait_for(lambda: output(runtime, process["pid"], follow=False)[0])
        child = int(output(runtime, process["pid"], follow=False)[0])
        listed = httpx.get(f"{runtime.url}/processes").json()["processes"]
        assert [p["pid"] for p in listed] == [process["pid"]]
        os.kill(child, 0)  # still there after the request that started it
    finally:
        runtime.stop()
    assert gone(int(str(process["pid"]))) and gone(child), "a process outlived the runtime"


def test_output_is_replayed_then_live(runtime: RuntimeServer) -> None:
    go = runtime.home / "go"
    process = start(runtime, f"echo one; while [ ! -e {go} ]; do sleep 0.02; done; echo two >&2")
    pid = process["pid"]
    wait_for(lambda: output(runtime, pid, follow=False) == ("one\n", None))  # running: no exit
    seen = []
    with httpx.stream("GET", f"{runtime.url}/processes/{pid}/output", timeout=20) as r:
        for event, data in sse(r.iter_lines()):
            seen.append((event, data))
            if data.get("data") == "one\n":
                go.touch()
    assert seen[:2] == [("stdout", {"data": "one\n"}), ("stderr", {"data": "two\n"})]
    assert seen[-1][0] == "exit" and seen[-1][1]["exit_code"] == 0  # type: ignore[index]
    ended = httpx.get(f"{runtime.url}/processes/{pid}").json()
    assert ended["status"] == "exited" and ended["exit_code"] == 0 and ended["ended_at"]
    # replayed once ended, then the exit; over a WebSocket too
    assert output(runtime, pid, follow=False) == ("one\ntwo\n", seen[-1][1])
    with connect(f"{runtime.url.replace('http', 'ws')}/processes/{pid}/output") as ws:
        frames = [json.loads(f) for f in ws]
    assert [f["type"] for f in frames] == ["stdout", "stderr", "exit"]


def test_only_the_last_mebibyte_is_kept(runtime: RuntimeServer) -> None:
    process = start(runtime, "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end")
    wait_for(
        lambda: httpx.get(f"{runtime.url}/processes/{process['pid']}").json()["exit_code"] == 0
    )
    text, end = output(runtime, process["pid"], follow=False)
    assert text.endswith("x\nend\n") and len(text) <= 1 << 20 and len(text) > 700_000
    assert end is not None


def test_stdin_reaches_the_process(runtime: RuntimeServer) -> None:
    process = start(runtime, "read a; echo got $a; cat")
    url = f"{runtime.url}/processes/{process['pid']}"
    r = httpx.post(f"{url}/stdin", json={"data": "one\n"})
    assert r.status_code == 200 and r.json()["status"] == "running"
    httpx.post(f"{url}/stdin", json={"data": "two\n", "eof": True})
    text, end = output(runtime, process["pid"])
    assert text == "got one\ntwo\n" and end == {
        "exit_code": 0, "timed_out": False, "duration_ms": end["duration_ms"],  # type: ignore[index]
    }  # fmt: skip
    r = httpx.post(f"{url}/stdin", json={"data": "late\n"})
    assert r.status_code == 409 and r.json()["code"] == "PROCESS_ENDED"


def test_kill_signals_the_whole_group(runtime: RuntimeServer) -> None:
    process = start(runtime, "sleep 300 & echo $!; wait")
    pid = process["pid"]
    wait_for(lambda: output(runtime, pid, follow=False)[0])
    child = int(output(runtime, pid, follow=False)[0])
    r = httpx.post(f"{runtime.url}/processes/{pid}/kill", json={"signal": "KILL"})
    assert r.status_code == 200
    assert gone(child)
    wait_for(lambda: httpx.get(f"{runtime.url}/processes/{pid}").json()["status"] == "exited")
    assert httpx.get(f"{runtime.url}/processes/{pid}").json()["exit_code"] == 137


def test_unknown_process_and_bad_signal(runtime: RuntimeServer) -> None:
    for url in ("/processes/999999999", "/processes/nope", "/processes/1/output"):
        r = httpx.get(runtime.url + url)
        assert (r.status_code, r.json()["code"]) == (404, "PROCESS_NOT_FOUND")
    process = start(runtime, "sleep 300")
    r = httpx.post(f"{runtime.url}/processes/{process['pid']}/kill", json={"signal": "STOP"})
    assert r.status_code == 400 and r.json()["detail"].startswith("signal")
    r = httpx.post(f"{runtime.url}/processes", json={"command": ""})
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_at_most_64_run_at_once(runtime: RuntimeServer) -> None:
    with httpx.Client(base_url=runtime.url) as client:
        for _ in range(64):
            assert client.post("/processes", json={"command": "sleep 300"}).status_code == 201
        r = client.post("/processes", json={"command": "sleep 300"})
        assert (r.status_code, r.json()["code"]) == (429, "TOO_MANY_PROCESSES")
        assert len(client.get("/processes").json()["processes"]) == 64


def test_output_without_follow_ends_for_a_chatty_process(runtime: RuntimeServer) -> None:
    process = start(runtime, "yes")
    text, end = output(runtime, process["pid"], follow=False)
    assert end is None and len(text) <= 2 << 20  # what was kept when asked, not what came after
    r = httpx.post(f"{runtime.url}/processes/{process['pid']}/kill", json={})
    assert r.status_code == 200
    assert gone(int(str(process["pid"])))
