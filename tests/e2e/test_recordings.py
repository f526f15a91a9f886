"""Terminal recordings against `tether up`: a recording started through the API records what
the session's terminal showed, and its cast (asciicast v2) replays to exactly those bytes:
downloaded, listed, through `tether logs --recording` and the SDK; the owner's only; nothing
recorded before it started or after it stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from tether import errors
from tether.sdk import Client

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_live_relay import user
from tests.waiting import wait_for

PASSWORD = "recordings-admin-pw-1"
BIN = Path(sys.executable).with_name("tether")  # the installed entry point


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TETHER_ADMIN_PASSWORD": PASSWORD, "TETHER_RATE_LIMITS": "login=100"}
    srv = start_server(tmp_path_factory.mktemp("recordings") / "home", env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": server.key}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def session(api: httpx.Client) -> str:
    made = api.post("/api/v1/sessions", json={"user": "admin", "template": "python"})
    assert made.status_code == 202, made.text
    sid = str(made.json()["id"])
    status = lambda: api.get(f"/v1/sessions/{sid}").json()["status"]  # noqa: E731
    assert wait_for(lambda: status() == "running", 60, 0.1), status()
    return sid


def terminal(server: Server, sid: str, typed: list[bytes | dict[str, Any]]) -> bytes:
    """Opens the session's terminal (100x30), sends `typed` (keys, or a control message), then
    `exit`, and returns every byte of output it showed until it closed."""
    url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/terminal?cols=100&rows=30"

    async def scenario() -> bytes:
        shown = bytearray()
        async with websockets.connect(url, additional_headers={"X-API-Key": server.key}) as ws:
            for item in typed:
                await ws.send(item if isinstance(item, bytes) else orjson.dumps(item).decode())
            await ws.send(b"exit\r")
            async with asyncio.timeout(30):
                async for message in ws:  # until the shell exits and the runtime closes it
                    assert isinstance(message, bytes)
                    shown += message
        return bytes(shown)

    return asyncio.run(scenario())


def cast_of(api: httpx.Client, sid: str, rid: str) -> tuple[dict[str, Any], list[list[Any]]]:
    got = api.get(f"/v1/sessions/{sid}/recordings/{rid}")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("application/x-asciicast")
    lines = got.content.splitlines()
    return orjson.loads(lines[0]), [orjson.loads(line) for line in lines[1:]]


def output(events: list[list[Any]]) -> bytes:
    return "".join(e[2] for e in events if e[1] == "o").encode()


@pytest.fixture(scope="module")
def recorded(server: Server, api: httpx.Client, session: str) -> dict[str, Any]:
    """A terminal used before a recording, one recorded (a resize and text printed in it),
    and one after it stopped."""
    sid = session
    assert api.get(f"/v1/sessions/{sid}/recordings").json()["recordings"] == []
    before = terminal(server, sid, [b"echo before-$((20+1))\r"])
    started = api.post(f"/v1/sessions/{sid}/recordings")
    assert started.status_code == 201, started.text
    rec = started.json()
    assert rec["status"] == "recording"
    again = api.post(f"/v1/sessions/{sid}/recordings")
    assert again.status_code == 409 and "recorded already" in again.json()["detail"]
    typed: list[bytes | dict[str, Any]] = [
        b"echo rec-$((6*7))\r",
        {"type": "resize", "cols": 120, "rows": 40},
        b"printf 'h\\303\\251llo \\342\\234\\223 %s\\n' $(seq 3)\r",
    ]
    shown = terminal(server, sid, typed)
    stopped = api.post(f"/v1/sessions/{sid}/recordings/{rec['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    after = terminal(server, sid, [b"echo after-$((30+3))\r"])
    return {"sid": sid, "rid": rec["id"], "stopped": stopped.json(), "shown": shown,
            "before": before, "after": after}  # fmt: skip


def test_a_recording_replays_to_exactly_what_the_terminal_showed(
    api: httpx.Client, recorded: dict[str, Any]
) -> None:
    sid, rid, shown = recorded["sid"], recorded["rid"], recorded["shown"]
    assert b"rec-42" in shown and "héllo ✓ 3".encode() in shown
    stopped = recorded["stopped"]
    assert stopped["status"] == "stopped" and stopped["size"] > len(shown)
    head, events = cast_of(api, sid, rid)
    assert head["version"] == 2 and (head["width"], head["height"]) == (100, 30)
    assert isinstance(head["timestamp"], int)
    times = [e[0] for e in events]
    assert times == sorted(times) and times[0] >= 0
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert output(events) == shown  # the same bytes, in the same order
    # Nothing from before it started or after it stopped.
    assert b"before-21" in recorded["before"] and b"after-33" in recorded["after"]
    assert b"before-21" not in output(events) and b"after-33" not in output(events)
    assert cast_of(api, sid, rid)[1] == events  # and it stays so
    listed = api.get(f"/v1/sessions/{sid}/recordings").json()["recordings"]
    found = [(r["id"], r["status"], r["size"]) for r in listed]
    assert found == [(rid, "stopped", stopped["size"])]


def tether(server: Server, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The installed `tether`, as a user runs it (no profile of the user's read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {"XDG_CONFIG_HOME": "/nonexistent", "TETHER_URL": server.url,
            "TETHER_API_KEY": server.key}  # fmt: skip
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, timeout=120)


def test_tether_logs_plays_a_recording_or_prints_its_cast(
    server: Server, api: httpx.Client, recorded: dict[str, Any]
) -> None:
    sid, rid = recorded["sid"], recorded["rid"]
    raw = tether(server, "logs", "--recording", rid, sid, "--raw")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == api.get(f"/v1/sessions/{sid}/recordings/{rid}").content
    played = tether(server, "logs", "--recording", rid, sid, "--speed", "1000")
    assert played.returncode == 0, played.stderr
    assert played.stdout == recorded["shown"]  # what the terminal showed, replayed
    listed = tether(server, "recording", "list", sid, "-o", "json")
    assert rid in [r["id"] for r in orjson.loads(listed.stdout)]
    missing = tether(server, "logs", "--recording", "rec-0000000000000000", sid, "--raw")
    assert missing.returncode == 4 and b"Recording not found" in missing.stderr


def test_the_sdk_records_lists_and_downloads(
    server: Server, api: httpx.Client, recorded: dict[str, Any], tmp_path: Path
) -> None:
    sid = recorded["sid"]
    s = Client(server.url, server.key).connect(sid)
    with s.recordings.record() as quiet:  # nothing shown in a terminal meanwhile
        assert quiet.status == "recording"
    (done,) = [r for r in s.recordings.list() if r.id == quiet.id]
    assert (done.status, done.size) == ("stopped", 0)
    assert [r.id for r in s.recordings.list()] == [quiet.id, recorded["rid"]]  # newest first
    head, *events = s.recordings.read(quiet).splitlines()
    assert orjson.loads(head)["version"] == 2 and events == []
    saved = s.recordings.download(recorded["rid"], tmp_path / "session.cast")
    assert saved.read_bytes() == api.get(f"/v1/sessions/{sid}/recordings/{recorded['rid']}").content
    assert orjson.loads(saved.read_bytes().splitlines()[0])["version"] == 2
    with pytest.raises(errors.NotFound):
        s.recordings.stop()  # none in progress


def test_another_user_finds_no_recording(server: Server, recorded: dict[str, Any]) -> None:
    sid, rid = recorded["sid"], recorded["rid"]
    key, _ = user(server, "mallory")
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as other:
        for method, path in [
            ("GET", f"/v1/sessions/{sid}/recordings"),
            ("POST", f"/v1/sessions/{sid}/recordings"),
            ("GET", f"/v1/sessions/{sid}/recordings/{rid}"),
            ("POST", f"/v1/sessions/{sid}/recordings/{rid}/stop"),
        ]:
            answer = other.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}) as owner:
        missing = owner.get(f"/v1/sessions/{sid}/recordings/rec-0000000000000000")
        assert missing.status_code == 404 and missing.json()["detail"] == "Recording not found"


def test_a_terminal_open_beside_another_plays_alone(
    server: Server, api: httpx.Client, recorded: dict[str, Any], tmp_path: Path
) -> None:
    """Two terminals open at once (two browser tabs): the cast plays the first and one opened
    after it closed, never the two screens interleaved; the one beside it plays alone, at
    its own size, through the API, the SDK and `tether recording download --terminal`."""
    sid = recorded["sid"]
    rid = api.post(f"/v1/sessions/{sid}/recordings").json()["id"]
    base = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/terminal"
    auth = {"X-API-Key": server.key}

    def terminals() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = api.get(f"/v1/sessions/{sid}/recordings").json()["recordings"]
        return next(r for r in got if r["id"] == rid)["terminals"]

    async def until(ws: Any, shown: bytearray, text: bytes) -> None:
        async with asyncio.timeout(30):
            while text not in shown:
                shown += await ws.recv()

    async def closed(ws: Any, shown: bytearray) -> None:
        await ws.send(b"exit\r")
        async with asyncio.timeout(30):
            async for message in ws:
                shown += message

    async def scenario() -> tuple[bytes, bytes]:
        first, beside = bytearray(), bytearray()
        async with websockets.connect(f"{base}?cols=100&rows=30", additional_headers=auth) as a:
            await a.send(b"echo one-$((1+1))\r")
            await until(a, first, b"one-2")
            assert await asyncio.to_thread(wait_for, lambda: len(terminals()) == 1, 30, 0.1)
            async with websockets.connect(f"{base}?cols=70&rows=20", additional_headers=auth) as b:
                await b.send(b"echo two-$((2+2))\r")
                await until(b, beside, b"two-4")
                await a.send(b"echo one-again\r")
                await until(a, first, b"one-again\r\n")
                await closed(b, beside)
            await closed(a, first)
        return bytes(first), bytes(beside)

    first, beside = asyncio.run(scenario())
    then = terminal(server, sid, [b"echo three-$((3+3))\r"])  # opened after both closed
    stopped = api.post(f"/v1/sessions/{sid}/recordings/{rid}/stop").json()
    ids = [t["id"] for t in stopped["terminals"]]
    assert len(ids) == 3 and [(t["width"], t["height"]) for t in stopped["terminals"]] == [
        (100, 30), (70, 20), (100, 30)
    ]  # fmt: skip
    head, events = cast_of(api, sid, rid)
    assert (head["width"], head["height"]) == (100, 30)
    assert output(events) == first + then  # one screen at a time, nothing of the other
    alone = api.get(stopped["terminals"][1]["url"])
    lines = alone.content.splitlines()
    assert orjson.loads(lines[0])["width"] == 70
    assert output([orjson.loads(line) for line in lines[1:]]) == beside
    unknown = api.get(f"/v1/sessions/{sid}/recordings/{rid}", params={"terminal": "nope"})
    assert unknown.status_code == 404 and "no terminal nope" in unknown.json()["detail"]
    s = Client(server.url, server.key).connect(sid)
    assert s.recordings.read(rid, terminal=ids[1]) == alone.content
    saved = tether(server, "recording", "download", sid, rid, str(tmp_path / "b.cast"),
                   "--terminal", ids[1])  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "b.cast").read_bytes() == alone.content


def test_a_recording_on_when_its_session_ends_is_stopped(
    api: httpx.Client, recorded: dict[str, Any]
) -> None:
    sid = recorded["sid"]
    on = api.post(f"/v1/sessions/{sid}/recordings")
    assert on.status_code == 201, on.text
    assert api.delete(f"/v1/sessions/{sid}").status_code in (200, 202, 204)
    status = lambda: api.get(f"/v1/sessions/{sid}").json()["status"]  # noqa: E731
    assert wait_for(lambda: status() == "terminated", 60, 0.1), status()
    (shown,) = [r for r in api.get(f"/v1/sessions/{sid}/recordings").json()["recordings"]
                if r["id"] == on.json()["id"]]  # fmt: skip
    assert shown["status"] == "stopped" and shown["stopped_at"] is not None
