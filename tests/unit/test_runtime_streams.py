"""Streamed exec on the real runtime app: output as it comes (SSE and WebSocket), stdin, env,
cwd, the timeout, and the command's end when its client leaves."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fakes.runtime import RuntimeServer


def sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    """(event, data) pairs of a Server-Sent Events stream."""
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def gone(pid: int, within: float = 10) -> bool:
    """Whether `pid` ends within the time: exits, or is a zombie (dead, its reaping is up to
    whoever adopted it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_chunks_arrive_while_the_command_runs(runtime: RuntimeServer) -> None:
    go = runtime.home / "go"
    command = f"echo ready; while [ ! -e {go} ]; do sleep 0.02; done; echo done >&2"
    seen: list[tuple[str, dict[str, object]]] = []
    body = {"command": command, "timeout": 20}
    with httpx.stream("POST", f"{runtime.url}/exec/stream", json=body, timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for event, data in sse(r.iter_lines()):
            seen.append((event, data))
            if data.get("data") == "ready\n":
                go.touch()  # the command ends only once its first words have arrived
    assert seen[:2] == [("stdout", {"data": "ready\n"}), ("stderr", {"data": "done\n"})]
    kind, end = seen[-1]
    assert kind == "exit" and end["exit_code"] == 0 and end["timed_out"] is False
    assert isinstance(end["duration_ms"], float)


def run(runtime: RuntimeServer, **body: object) -> tuple[str, str, dict[str, object]]:
    out, err, end = "", "", {}
    with httpx.stream("POST", f"{runtime.url}/exec/stream", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        for event, data in sse(r.iter_lines()):
            if event == "stdout":
                out += str(data["data"])
            elif event == "stderr":
                err += str(data["data"])
            else:
                end = data
    return out, err, end


def test_stdin_env_and_cwd_reach_the_command(runtime: RuntimeServer) -> None:
    (runtime.home / "sub").mkdir()
    out, err, end = run(
        runtime,
        command="echo $GREETING; pwd; cat; echo oops >&2; exit 3",
        env={"GREETING": "hello there"},
        cwd="sub",
        stdin="from stdin\n",
    )
    assert out == f"hello there\n{runtime.home / 'sub'}\nfrom stdin\n"
    assert err == "oops\n" and end["exit_code"] == 3


def test_text_split_mid_character_is_decoded_whole(runtime: RuntimeServer) -> None:
    out, _, _ = run(runtime, command=r"printf '\342\202'; sleep 0.1; printf '\254 \377\n'")
    assert out == "\u20ac \ufffd\n"  # the euro sign whole, the bad byte replaced


def test_timeout_kills_the_group_with_124(runtime: RuntimeServer) -> None:
    started = time.monotonic()
    out, _, end = run(runtime, command="sleep 30 & echo $!; wait", timeout=0.5)
    assert end["exit_code"] == 124 and end["timed_out"] is True
    assert time.monotonic() - started < 10
    assert gone(int(out.split()[0])), "the timed-out command's child lives on"


def test_a_client_leaving_kills_the_command(runtime: RuntimeServer) -> None:
    body = {"command": "sleep 60 & echo $!; wait"}
    with httpx.stream("POST", f"{runtime.url}/exec/stream", json=body, timeout=20) as r:
        _, data = next(sse(r.iter_lines()))
        child = int(str(data["data"]).split()[0])
    # the connection is closed here, with the command still running
    assert gone(child), "the command outlived its client"


def test_a_bad_request_names_the_field(runtime: RuntimeServer) -> None:
    for body, field in (
        ({"timeout": 3}, "command"),
        ({"command": "true", "timeout": -1}, "timeout"),
        ({"command": "true", "env": {"A": 1}}, "env"),
    ):
        r = httpx.post(f"{runtime.url}/exec/stream", json=body)
        assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"
        assert r.json()["detail"].startswith(field)
    r = httpx.post(f"{runtime.url}/exec/stream", json={"command": "true", "cwd": "nowhere"})
    assert r.status_code == 400 and r.json()["detail"].startswith("cwd")


def test_websocket_exec_takes_stdin_and_signals(runtime: RuntimeServer) -> None:
    url = runtime.url.replace("http", "ws") + "/exec/ws"
    with connect(url) as ws:
        ws.send(json.dumps({"command": "read a; echo got $a; cat", "env": {}, "timeout": 20}))
        ws.send(json.dumps({"type": "stdin", "data": "one\n"}))
        assert json.loads(ws.recv(10)) == {"type": "stdout", "data": "got one\n"}
        ws.send(json.dumps({"type": "stdin", "data": "two\n"}))
        ws.send(json.dumps({"type": "stdin_eof"}))
        frames = [json.loads(f) for f in ws]
        assert ws.close_code == 1000
    assert frames[0] == {"type": "stdout", "data": "two\n"}
    assert frames[-1]["type"] == "exit" and frames[-1]["exit_code"] == 0

    with connect(url) as ws:
        ws.send(json.dumps({"command": "echo $$; sleep 60", "timeout": 20}))
        json.loads(ws.recv(10))
        ws.send(json.dumps({"type": "signal", "signal": "INT"}))
        frames = [json.loads(f) for f in ws]
    assert frames[-1]["type"] == "exit" and frames[-1]["exit_code"] == 130


def test_websocket_bad_first_frame_is_refused(runtime: RuntimeServer) -> None:
    url = runtime.url.replace("http", "ws") + "/exec/ws"
    with connect(url) as ws:
        ws.send(json.dumps({"timeout": 3}))
        assert json.loads(ws.recv(10)) == {
            "type": "error",
            "detail": "command: required, a non-empty string",
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(10)
        assert ws.close_code == 1008


def test_websocket_client_leaving_kills_the_command(runtime: RuntimeServer) -> None:
    url = runtime.url.replace("http", "ws") + "/exec/ws"
    with connect(url) as ws:
        ws.send(json.dumps({"command": "sleep 60 & echo $!; wait"}))
        child = int(json.loads(ws.recv(10))["data"].split()[0])
    assert gone(child)


def test_a_slow_reader_loses_nothing(runtime: RuntimeServer) -> None:
    """8 MB read a little at a time: the command waits for the reader (the runtime keeps at most
    1 MiB of it), and every byte arrives."""
    size, got = 8_000_000, 0
    body = {"command": f"head -c {size} /dev/zero | tr '\\0' x; echo; echo end"}
    with httpx.stream("POST", f"{runtime.url}/exec/stream", json=body, timeout=30) as r:
        tail = ""
        for event, data in sse(r.iter_lines()):
            if event == "stdout":
                text = str(data["data"])
                got += text.count("x")
                tail = (tail + text)[-10:]
                time.sleep(0.002)  # a reader slower than the command
    assert got == size and tail.endswith("x\nend\n")
