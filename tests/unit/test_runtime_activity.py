"""`GET /activity` on the real runtime app: busy while an exec or a background process runs;
its last activity moves with real work (terminal bytes, port and file calls, a command's start
and end), never with a terminal that sits at its prompt."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.fakes.runtime import RuntimeServer
from tests.unit.test_runtime_processes import start, wait_for
from tests.unit.test_runtime_streams import sse


def activity(runtime: RuntimeServer) -> dict[str, Any]:
    r = httpx.get(f"{runtime.url}/activity")
    assert r.status_code == 200
    return dict(r.json())


def test_a_fresh_workspace_is_idle_and_has_done_nothing(runtime: RuntimeServer) -> None:
    assert activity(runtime) == {
        "busy": False,
        "running": {"execs": 0, "processes": 0},
        "last_activity_at": None,
        "last_activity_source": None,
    }


def test_a_background_process_keeps_it_busy_until_it_ends(runtime: RuntimeServer) -> None:
    process = start(runtime, "sleep 60")
    now = activity(runtime)
    assert now["busy"] and now["running"] == {"execs": 0, "processes": 1}
    assert now["last_activity_source"] == "process"
    r = httpx.post(f"{runtime.url}/processes/{process['pid']}/kill", json={"signal": "KILL"})
    assert r.status_code == 200
    wait_for(lambda: not activity(runtime)["busy"])
    ended = activity(runtime)
    assert ended["running"] == {"execs": 0, "processes": 0}
    assert ended["last_activity_source"] == "process"
    assert ended["last_activity_at"] > now["last_activity_at"]  # its end, after its start


def test_an_exec_keeps_it_busy_while_it_runs_on_every_path(runtime: RuntimeServer) -> None:
    """The whole-result exec (what the agent sends) and the streamed one count alike."""
    go = runtime.home / "go"
    command = f"echo ready; while [ ! -e {go} ]; do sleep 0.02; done"
    answers: list[httpx.Response] = []
    whole = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{runtime.url}/exec", json={"command": command, "timeout": 30}, timeout=40)
        )
    )
    whole.start()
    try:
        wait_for(lambda: activity(runtime)["running"]["execs"] == 1)
        body = {"command": command, "timeout": 30}
        with httpx.stream("POST", f"{runtime.url}/exec/stream", json=body, timeout=40) as r:
            for event, _ in sse(r.iter_lines()):
                if event == "stdout":  # it runs
                    now = activity(runtime)
                    assert now["busy"] and now["running"] == {"execs": 2, "processes": 0}
                    assert now["last_activity_source"] == "exec"
                    go.touch()
    finally:
        go.touch()
        whole.join(40)
    assert answers and answers[0].status_code == 200
    wait_for(lambda: not activity(runtime)["busy"])
    assert activity(runtime)["last_activity_source"] == "exec"


def read_until(ws: ClientConnection, *parts: bytes) -> None:
    """Reads the terminal's output until it has shown each of `parts`, in order."""
    seen = b""
    for part in parts:
        while part not in seen:
            frame = ws.recv(timeout=10)
            assert isinstance(frame, bytes)
            seen += frame
        seen = seen[seen.index(part) + len(part) :]


def test_a_terminal_counts_its_bytes_but_not_its_quiet_prompt(runtime: RuntimeServer) -> None:
    url = runtime.url.replace("http", "ws", 1) + "/pty"
    with connect(url) as ws:
        ws.send(b"PS1='P> '; echo mark-$((40+2))\n")
        read_until(ws, b"mark-42\r\n", b"P> ")  # the answer, then its prompt: now it is quiet
        quiet = activity(runtime)
        assert quiet["last_activity_source"] == "terminal" and not quiet["busy"]
        assert ws.ping().wait(10)
        assert activity(runtime) == quiet  # an open terminal, pinged: no activity
        ws.send(b"e")
        read_until(ws, b"e")  # its echo
        typed = activity(runtime)
        assert typed["last_activity_at"] > quiet["last_activity_at"]
        assert typed["last_activity_source"] == "terminal"


def test_files_and_ports_count_as_their_kind(runtime: RuntimeServer) -> None:
    assert httpx.get(f"{runtime.url}/files", params={"path": "."}).status_code == 200
    assert activity(runtime)["last_activity_source"] == "files"
    with socket.socket() as free:  # a port nothing listens on: still a request to a port
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert httpx.get(f"{runtime.url}/ports/{port}/").status_code == 502
    assert activity(runtime)["last_activity_source"] == "port"
