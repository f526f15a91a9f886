"""The relay over real WebSockets, against `tether up` with a real workspace runtime."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

WS_URL = "{ws}/v1/sessions/{sid}/{kind}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One server for the module: room for its StreamSpace calls (the limits have their tests).
    limits = {"TETHER_RATE_LIMITS": "login=1000,create=1000,api=10000"}
    srv = start_server(tmp_path_factory.mktemp("relay") / "home", limits)
    yield srv
    srv.stop()


def api(server: Server, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key or server.key}, timeout=60)


@pytest.fixture(scope="module")
def bob_key(server: Server) -> str:
    from tether.core.models import Role
    from tether.service.auth import Auth
    from tether.store.sqlite import SqliteStore

    auth = Auth(
        SqliteStore(server.home / "tether.db")
    )  # the operator's own store, as `tether up`'s
    auth.ensure_user("bob", Role.USER)
    return auth.add_key("bob")


@pytest.fixture(scope="module")
def session(server: Server) -> str:
    with api(server) as c:
        sid: str = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]
    return sid


def ws_url(server: Server, sid: str, kind: str, **query: str) -> str:
    base = WS_URL.format(ws=server.url.replace("http", "ws", 1), sid=sid, kind=kind)
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


async def connect(
    url: str, **kw: Any
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    client = aiohttp.ClientSession()
    try:
        return client, await client.ws_connect(url, **kw)
    except BaseException:
        await client.close()
        raise


async def refused_status(url: str, **kw: Any) -> int:
    client = aiohttp.ClientSession()
    try:
        await client.ws_connect(url, **kw)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    finally:
        await client.close()
    return 101


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, needle: bytes, timeout: float = 10
) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        seen += msg.data
    return seen


def test_onmemos_shell_protocol(server: Server, session: str) -> None:
    async def main() -> list[dict[str, Any]]:
        url = WS_URL.format(ws=server.url.replace("http", "ws", 1), sid=session, kind="shell")
        legacy = url.replace("/v1/sessions/", "/v1/cloudrun/workspaces/") + f"?api_key={server.key}"
        client, ws = await connect(legacy)
        try:
            await ws.send_str(json.dumps({"type": "command", "command": "ls -la"}))
            first = json.loads((await ws.receive(timeout=30)).data)
            await ws.send_str(json.dumps({"type": "command", "command": "echo err >&2; exit 4"}))
            second = json.loads((await ws.receive(timeout=30)).data)
            await ws.send_str("not json")
            third = json.loads((await ws.receive(timeout=30)).data)
            return [first, second, third]
        finally:
            await ws.close()
            await client.close()

    first, second, third = asyncio.run(main())
    assert first["type"] == "command_result" and first["success"] is True
    assert "bucket" in first["stdout"] and first["stderr"] == ""
    assert (second["success"], second["stderr"], second["returncode"]) == (False, "err\n", 4)
    assert third["type"] == "error"


def test_terminal_echo_and_resize(server: Server, session: str) -> None:
    async def main() -> tuple[bytes, bytes]:
        client, ws = await connect(
            ws_url(server, session, "terminal", api_key=server.key, cols="100", rows="30")
        )
        try:
            await ws.send_bytes(b"echo hello-$((6*7))\n")
            echoed = await read_until(ws, b"hello-42\r\n")
            await ws.send_str(json.dumps({"type": "resize", "cols": 123, "rows": 45}))
            await ws.send_bytes(b"stty size\n")
            size = await read_until(ws, b"45 123")
            await ws.send_bytes(b"exit\n")
            closed = await ws.receive(timeout=10)
            assert closed.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.BINARY,
            )
            return echoed, size
        finally:
            await ws.close()
            await client.close()

    echoed, size = asyncio.run(main())
    assert b"hello-42" in echoed and b"45 123" in size


def test_a_terminal_ends_with_its_shell_while_a_job_it_left_floods_the_pty(
    server: Server, session: str
) -> None:
    """`yes &` then `exit`: the job keeps the PTY open and never stops writing; the terminal
    still closes, after a bounded drain."""

    async def main() -> int:
        client, ws = await connect(ws_url(server, session, "terminal", api_key=server.key))
        try:
            await ws.send_bytes(b"echo ready\n")
            await read_until(ws, b"ready\r\n")
            await ws.send_bytes(b"yes flood & exit\n")
            received = 0
            while (msg := await ws.receive(timeout=30)).type is aiohttp.WSMsgType.BINARY:
                received += len(msg.data)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            return received
        finally:
            await ws.close()
            await client.close()

    assert asyncio.run(asyncio.wait_for(main(), 60)) < 4 << 20  # bounded, even when broken


def test_refused_before_the_upgrade(server: Server, session: str, bob_key: str) -> None:
    async def main() -> list[int]:
        return [
            await refused_status(ws_url(server, session, "shell")),  # no credential
            await refused_status(ws_url(server, session, "shell", api_key="tether_x_wrong")),
            await refused_status(ws_url(server, session, "shell", api_key=bob_key)),  # not his
            await refused_status(ws_url(server, session, "terminal", api_key=bob_key)),
            await refused_status(ws_url(server, "ws-nope", "terminal", api_key=server.key)),
            await refused_status(  # a page on another site
                ws_url(server, session, "shell", api_key=server.key), origin="https://evil.example"
            ),
            await refused_status(
                ws_url(server, session, "terminal", api_key=server.key),
                origin="https://evil.example",
            ),
            await refused_status(ws_url(server, session, "terminal")),  # no credential
        ]

    assert asyncio.run(main()) == [401, 401, 404, 404, 404, 403, 403, 401]


def test_tickets_are_single_use_and_bound_to_their_session(server: Server, session: str) -> None:
    with api(server) as c:
        other = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]

        def ticket(sid: str) -> str:
            r = c.post(f"/api/v1/sessions/{sid}/tickets")
            assert r.status_code == 201 and r.json()["session_id"] == sid
            value: str = r.json()["ticket"]
            return value

        t1, t2 = ticket(session), ticket(session)

    async def main() -> list[int]:
        client, ws = await connect(ws_url(server, session, "terminal", ticket=t1))
        await ws.close()
        await client.close()
        return [
            await refused_status(ws_url(server, session, "terminal", ticket=t1)),  # reused
            await refused_status(ws_url(server, other, "terminal", ticket=t2)),  # wrong session
            await refused_status(ws_url(server, session, "terminal", ticket=t2)),  # spent by that
        ]

    assert asyncio.run(main()) == [401, 401, 401]


def test_a_ticket_expires(server: Server, session: str) -> None:
    from datetime import timedelta

    from tether.core.models import utcnow
    from tether.service.tickets import KIND
    from tether.store.sqlite import SqliteStore

    with api(server) as c:
        t = c.post(f"/api/v1/sessions/{session}/tickets").json()["ticket"]
    store = SqliteStore(server.home / "tether.db")
    (doc,) = store.query(KIND, [("session_id", "==", session)])
    store.update(
        KIND, doc.id, {**doc.data, "expires_at": utcnow() - timedelta(seconds=1)}, doc.version
    )
    assert asyncio.run(refused_status(ws_url(server, session, "terminal", ticket=t))) == 401


def test_a_session_that_ends_closes_its_terminal(server: Server) -> None:
    with api(server) as c:
        sid = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]

        async def main() -> tuple[aiohttp.WSMsgType, int | None]:
            client, ws = await connect(ws_url(server, sid, "terminal", api_key=server.key))
            try:
                await ws.send_bytes(b"echo ready\n")
                await read_until(ws, b"ready\r\n")
                await asyncio.get_running_loop().run_in_executor(
                    None, c.delete, f"/v1/sessions/{sid}"
                )
                while True:
                    msg = await ws.receive(timeout=15)
                    if msg.type is not aiohttp.WSMsgType.BINARY:
                        return msg.type, msg.data  # the close frame and its code
            finally:
                await client.close()

        # The stopping workspace closes its terminal; the close frame comes through the relay.
        assert asyncio.run(main()) == (aiohttp.WSMsgType.CLOSE, 4001)


def test_the_relay_cuts_a_session_that_ended_when_its_workspace_does_not_stop(
    server: Server,
) -> None:
    """The store says the session is over, but its workspace never heard (its agent is gone,
    say): the relay still ends the stream, on its own, within seconds."""
    from tether.core.lifecycle import SessionState
    from tether.core.models import Session
    from tether.service.repo import Repo
    from tether.store.sqlite import SqliteStore

    with api(server) as c:
        sid = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]

    async def main() -> tuple[aiohttp.WSMsgType, float]:
        client, ws = await connect(ws_url(server, sid, "terminal", api_key=server.key))
        try:
            await ws.send_bytes(b"echo ready\n")
            await read_until(ws, b"ready\r\n")
            sessions = Repo(SqliteStore(server.home / "tether.db"), "sessions", Session)

            def ended(s: Session) -> Session:
                s.state = SessionState.TERMINATED
                return s

            sessions.mutate(sid, ended)  # behind the control plane's back: no stop command
            started = time.monotonic()
            while (msg := await ws.receive(timeout=30)).type is aiohttp.WSMsgType.BINARY:
                pass
            return msg.type, time.monotonic() - started
        finally:
            await client.close()

    kind, took = asyncio.run(main())
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert took < 15, f"the relay took {took:.1f}s to end the stream"


def test_tether_shell_is_a_real_terminal(server: Server, session: str) -> None:
    """`tether shell` in tmux: raw keys, the remote prompt, resize on SIGWINCH, clean exit."""
    import sys

    from tests.terminal import Tmux

    env = f"TETHER_URL={server.url} TETHER_API_KEY={server.key}"
    cmd = (
        f"{env} {sys.executable} -m tether.cli.main shell {session}; echo SHELL-EXITED-$?; sleep 30"
    )
    term = Tmux(cmd, width=100, height=30)
    try:
        term.screen_has("~#")  # the remote login shell's prompt
        term.keys("echo remote-$((40+2))", "Enter")
        term.screen_has("remote-42")
        term.keys("stty size", "Enter")
        term.screen_has("30 100")
        term.run("resize-window", "-t", term.name, "-x", "120", "-y", "40")
        term.keys("clear; stty size", "Enter")
        term.screen_has("40 120")
        term.keys("sleep 100", "Enter")
        term.keys("C-c", "")  # ^C reaches the remote shell, not the CLI
        term.keys("echo still-$((1+1))", "Enter")
        term.screen_has("still-2")
        # A job left running keeps the PTY open: the terminal still ends with the shell.
        term.keys("sleep 300 & exit", "Enter")
        term.screen_has("SHELL-EXITED-0", timeout=60)
    finally:
        term.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_live_logs_follow_over_a_websocket(server: Server) -> None:
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        loop = "for i in $(seq 1 3000); do echo tick-$i; sleep 0.1; done"
        ticker = {"name": "ticker", "display_name": "Ticker", "command": loop}
        assert c.post("/templates", json=ticker).status_code == 201
        sid = c.post("/sessions", json={"user": "me", "template": "ticker"}).json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/sessions/{sid}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        plain = c.get(f"/sessions/{sid}/logs?tail=3")  # no upgrade: the JSON answer
        assert plain.status_code == 200 and len(plain.json()["logs"]) == 3

    async def main() -> list[str]:
        url = ws_url(server, sid, "x").replace(
            f"/v1/sessions/{sid}/x", f"/api/v1/sessions/{sid}/logs"
        )
        client, ws = await connect(url + "?follow=true&tail=2", headers=h)
        lines: list[str] = []
        try:
            while len(lines) < 12:
                msg = await ws.receive(timeout=10)
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                lines.append(msg.data)
        finally:
            await ws.close()
            await client.close()
        return lines

    lines = asyncio.run(main())
    ticks = [int(line.rsplit("tick-", 1)[1]) for line in lines if "tick-" in line]
    assert len(ticks) >= 10 and ticks == sorted(ticks), lines
    assert ticks[-1] - ticks[0] >= 9, "new lines keep arriving after the first ones"
    assert lines[0][:4].isdigit(), "lines carry their timestamps"


def test_a_session_that_ends_closes_its_shell_websocket(server: Server) -> None:
    with api(server) as c:
        sid = c.post("/v1/sessions", json={"template": "shell"}).json()["id"]

        async def main() -> tuple[aiohttp.WSMsgType, int | None]:
            client, ws = await connect(ws_url(server, sid, "shell", api_key=server.key))
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, c.delete, f"/v1/sessions/{sid}"
                )
                msg = await ws.receive(timeout=15)
                return msg.type, ws.close_code
            finally:
                await client.close()

        kind, code = asyncio.run(main())
        assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and code == 4001


def raw_websocket(server: Server, path: str) -> socket.socket:
    """A client that does the handshake by hand, so that it can truly stop reading (a library
    client keeps draining the socket into its own memory)."""
    host, port = server.url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"X-API-Key: {server.key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked_binary_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + body


def test_a_slow_reader_does_not_grow_the_relay(server: Server, session: str) -> None:
    """The client stops reading while the workspace writes as fast as it can: the relay's
    memory stays put (each send waits for the socket, so the shell is slowed instead)."""
    sock = raw_websocket(server, f"/v1/sessions/{session}/terminal")
    try:
        sock.sendall(masked_binary_frame(b"yes 0123456789abcdef0123456789abcdef\n"))
        time.sleep(1)  # the pipes fill up
        before = rss_kib(server.proc.pid)
        time.sleep(6)  # still not reading
        after = rss_kib(server.proc.pid)
        sock.settimeout(10)
        assert sock.recv(65536), "the stream is throttled, not dead"
    finally:
        sock.close()
    assert after - before < 16 * 1024, f"relay RSS grew from {before} to {after} KiB"


def test_an_open_terminal_at_its_prompt_idles_out_and_is_ended(server: Server) -> None:
    """An open connection is not activity (what crosses it is: the workspace's runtime counts
    a terminal's bytes, tests/e2e/test_idle.py): a terminal left at its prompt does not hold
    off the idle timeout, and the relay ends it with its session."""
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        body = {"user": "me", "template": "shell", "idle_timeout": "3s"}
        sid = c.post("/sessions", json=body).json()["id"]
        assert wait_for(lambda: c.get(f"/sessions/{sid}").json()["state"] == "running", step=0.1)

        async def held_open() -> bool:
            client, ws = await connect(ws_url(server, sid, "terminal", api_key=server.key))
            try:
                async with asyncio.timeout(40):
                    async for _ in ws:  # the prompt, then nothing until the relay ends it
                        pass
                return ws.closed
            finally:
                await ws.close()
                await client.close()

        assert asyncio.run(held_open())
        assert c.get(f"/sessions/{sid}").json()["state"] in ("hibernating", "hibernated")


# -- live logs over plain HTTP (curl, EventSource) ------------------------------------------------

TICKER = "for i in $(seq 1 3000); do echo tick-$i; sleep 0.1; done"


def running_ticker(c: httpx.Client, name: str) -> str:
    """A StreamSpace session printing tick-1, tick-2, ... ten times a second, once it runs."""
    if c.get(f"/templates/{name}").status_code == 404:
        body = {"name": name, "display_name": "Ticker", "command": TICKER}
        assert c.post("/templates", json=body).status_code == 201
    sid: str = c.post("/sessions", json={"user": "me", "template": name}).json()["id"]
    assert wait_for(lambda: c.get(f"/sessions/{sid}").json()["state"] == "running", step=0.1)
    return sid


def ticks(lines: list[str]) -> list[int]:
    return [int(line.rsplit("tick-", 1)[1]) for line in lines if "tick-" in line]


def events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event in `lines`."""
    kind, data = "message", []
    for line in lines:
        if not line:
            yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])


def test_curl_follows_live_logs_without_a_websocket(server: Server) -> None:
    """`curl -N .../logs?follow=true`: the last lines, then each new one as it is written, one
    per line of a chunked text/plain answer."""
    import subprocess

    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        sid = running_ticker(c, "ticker-plain")
    url = f"{server.url}/api/v1/sessions/{sid}/logs?follow=true&tail=2"
    curl = subprocess.Popen(
        ["curl", "-sSN", "-i", "-m", "60", url, "-H", f"Authorization: Bearer {server.key}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert curl.stdout is not None
        head = []
        while line := curl.stdout.readline().rstrip("\r\n"):
            head.append(line.lower())
        lines = [curl.stdout.readline().rstrip("\n") for _ in range(15)]
    finally:
        curl.kill()  # the client leaves
        curl.wait()
        httpx.delete(f"{server.url}/api/v1/sessions/{sid}", headers=h, timeout=30)
    assert head[0].startswith("http/1.1 200"), head
    assert "content-type: text/plain; charset=utf-8" in head
    assert "transfer-encoding: chunked" in head
    got = ticks(lines)
    assert got == sorted(got) and got[-1] - got[0] >= 10, "new lines keep coming"
    assert lines[-1][:4].isdigit(), "each line carries its timestamp"


def test_event_stream_follows_live_logs_until_the_session_ends(server: Server) -> None:
    """With `Accept: text/event-stream`: one event a line; the session's end ends the stream,
    with an `end` event saying so. A read-only key may follow logs."""
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        sid = running_ticker(c, "ticker-sse")
        made = c.post("/api-keys", json={"name": "log-reader", "scope": "read"}).json()
        reader = {"Authorization": f"Bearer {made['key']}", "Accept": "text/event-stream"}
        url = f"/sessions/{sid}/logs?follow=true&tail=1&timestamps=false"
        seen: list[tuple[str, str]] = []
        with c.stream("GET", url, headers=reader) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            for event in events(r.iter_lines()):
                seen.append(event)
                if len(ticks([data for _, data in seen])) == 5:  # following: now end it
                    assert c.delete(f"/sessions/{sid}").status_code == 204
        # The stream has ended by itself (the loop above ran out): the last event says why.
        assert seen[-1] == ("end", "session ended"), seen[-3:]
        # (The runtime's own line saying the main process started may come in too.)
        lines = [data for kind, data in seen if kind == "message" and "[tether]" not in data]
        assert all(line.startswith("tick-") for line in lines), "timestamps=false"
        assert ticks(lines) == sorted(ticks(lines)) and len(lines) >= 5


def test_a_followed_log_is_cut_when_its_key_is_revoked(server: Server) -> None:
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        sid = running_ticker(c, "ticker-sse")
        made = c.post("/api-keys", json={"name": "to-revoke"}).json()
        follower = {"Authorization": f"Bearer {made['key']}", "Accept": "text/event-stream"}
        seen: list[tuple[str, str]] = []
        with c.stream("GET", f"/sessions/{sid}/logs?follow=true", headers=follower) as r:
            for event in events(r.iter_lines()):
                seen.append(event)
                if len(seen) == 3:
                    assert c.delete(f"/api-keys/{made['id']}").status_code == 204
        assert seen[-1] == ("end", "access revoked"), seen[-3:]
        assert c.get(f"/sessions/{sid}").json()["state"] == "running", "only the stream ends"
        c.delete(f"/sessions/{sid}")


def test_a_refused_follow_answers_before_the_stream_in_streamspace_shape(server: Server) -> None:
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as c:
        sid = running_ticker(c, "ticker-plain")

        def refused(path: str, status: int, code: str, headers: Any = h) -> None:
            r = httpx.get(f"{server.url}/api/v1{path}", headers=headers, timeout=30)
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert body["code"] == code and {"error", "message", "request_id"} <= set(body), body

        refused("/sessions/nope/logs?follow=true", 404, "SESSION_NOT_FOUND")
        refused(f"/sessions/{sid}/logs?follow=true&tail=0", 400, "INVALID_PARAMETER")
        refused(f"/sessions/{sid}/logs?follow=true", 401, "AUTH_TOKEN_MISSING", headers={})
        assert c.delete(f"/sessions/{sid}").status_code == 204

        def ended() -> bool:
            return bool(c.get(f"/sessions/{sid}").json()["state"] == "terminated")

        assert wait_for(ended, step=0.1)
        refused(f"/sessions/{sid}/logs?follow=true", 409, "SESSION_NOT_RUNNING")
