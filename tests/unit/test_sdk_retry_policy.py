"""`RetryPolicy` against a real HTTP server on loopback that answers 503 or 429, with or
without Retry-After, before it answers 200: what is tried again, when, and what is not."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest
from aiohttp import web
from tether import errors
from tether.sdk import AsyncClient, Client, CommandFailed, CommandResult, RetryPolicy
from tether.sdk.calls import retry_after

from tests.fakes.loopback import LoopbackApp


@dataclass
class Seen:
    request: str
    key: str | None
    at: float  # time.time() when it arrived
    monotonic: float


@dataclass
class Scripted:
    """Answers each request with the next of `script` (status, headers) while there is one,
    then 200 with a session."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(f"{request.method} {request.path}",
                              request.headers.get("Idempotency-Key"), time.time(),
                              time.monotonic()))  # fmt: skip
        body = await request.read()  # all of it arrived, whatever the answer
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"detail": "not now", "code": "BUSY"}, status=status,
                                     headers=headers)  # fmt: skip
        if request.method == "PUT":  # a file stored: what the runtime answers
            stored = {"path": "/home/tether/" + request.query["path"], "size": len(body),
                      "sha256": hashlib.sha256(body).hexdigest()}  # fmt: skip
            return web.json_response(stored, status=201)
        session = {"id": "ws-1", "template": "shell", "status": "running", "url": "http://x"}
        return web.json_response(session, status=201 if request.method == "POST" else 200)


@pytest.fixture
def server() -> Iterator[tuple[Scripted, str]]:
    scripted = Scripted()

    def app() -> web.Application:
        made = web.Application(client_max_size=16 << 20)
        made.router.add_route("*", "/{tail:.*}", scripted.handle)
        return made

    loopback = LoopbackApp("scripted")
    url = loopback.start(app)
    yield scripted, url
    loopback.stop()


def gap(seen: list[Seen]) -> float:
    return seen[1].monotonic - seen[0].monotonic


def test_a_read_answered_503_is_tried_again_after_its_retry_after(
    server: tuple[Scripted, str],
) -> None:
    scripted, url = server
    scripted.script = [(503, {"Retry-After": "1"})]
    with Client(url, "k") as client:
        assert client.connect("ws-1").info().status == "running"
    assert [s.request for s in scripted.seen] == ["GET /v1/sessions/ws-1"] * 3
    assert gap(scripted.seen) >= 0.95  # the second try waited the second it was asked to


def test_a_retry_after_date_is_waited_for(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    when = int(time.time()) + 2  # an HTTP date has whole seconds
    scripted.script = [(429, {"Retry-After": formatdate(when, usegmt=True)})]
    with Client(url, "k") as client:
        client.get_session("ws-1")
    assert len(scripted.seen) == 2 and scripted.seen[1].at >= when - 0.05


def test_a_retry_after_past_max_backoff_is_raised_at_once(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script = [(429, {"Retry-After": "120"})]
    client = Client(url, "k", retry=RetryPolicy(max_backoff=5))
    with client, pytest.raises(errors.RateLimited) as raised:
        client.get_session("ws-1")
    assert raised.value.details["retry_after"] == 120
    assert raised.value.details["code"] == "BUSY" and len(scripted.seen) == 1


def test_without_retry_after_it_backs_off_until_attempts_run_out(
    server: tuple[Scripted, str],
) -> None:
    scripted, url = server
    scripted.script = [(503, {})] * 5
    policy = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.2)
    with Client(url, "k", retry=policy) as client:
        with pytest.raises(errors.Unavailable) as raised:
            client.list_sessions()
        assert raised.value.details["status"] == 503 and len(scripted.seen) == 3
        # The policy is the client's to change: read again at each call.
        client.retry.attempts = 1
        with pytest.raises(errors.Unavailable):
            client.list_sessions()
    assert len(scripted.seen) == 4


def test_a_status_not_listed_is_not_retried(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script = [(502, {})]
    client = Client(url, "k", retry=RetryPolicy(statuses=(503,)))
    with client, pytest.raises(errors.Unavailable):
        client.get_session("ws-1")
    assert len(scripted.seen) == 1


def test_a_call_that_is_not_idempotent_is_sent_once(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    with Client(url, "k") as client:
        session = client.connect("ws-1")
        scripted.script = [(503, {"Retry-After": "0"})]
        with pytest.raises(errors.Unavailable):
            session.pause()
    assert [s.request for s in scripted.seen] == ["GET /v1/sessions/ws-1",
                                                   "POST /v1/sessions/ws-1/pause"]  # fmt: skip


def test_a_create_is_sent_again_with_the_same_idempotency_key(
    server: tuple[Scripted, str],
) -> None:
    scripted, url = server
    scripted.script = [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})]
    with Client(url, "k") as client:
        session = client.create("shell", keep=True)
    assert session.id == "ws-1"
    posts = [s for s in scripted.seen if s.request == "POST /v1/sessions"]
    assert len(posts) == 3 and posts[0].key and {s.key for s in posts} == {posts[0].key}


def test_an_upload_answered_503_is_sent_again_whole(
    server: tuple[Scripted, str], tmp_path: Path
) -> None:
    scripted, url = server
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 1))  # more than one chunk
    with Client(url, "k") as client:
        session = client.connect("ws-1")
        scripted.script = [(503, {"Retry-After": "0"})]
        written = session.files.upload(source, "up.bin")
    assert written.size == source.stat().st_size  # the second try sent it all, from the start
    assert written.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [s.request for s in scripted.seen[1:]] == ["PUT /v1/sessions/ws-1/files/content"] * 2


def test_the_async_client_follows_the_same_policy(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script = [(503, {"Retry-After": "1"}), (503, {"Retry-After": "0"})]

    async def go() -> str:
        async with AsyncClient(url, "k") as client:
            session = await client.create("shell", keep=True)
            return (await session.info()).status

    assert asyncio.run(go()) == "running"
    posts = [s for s in scripted.seen if s.request == "POST /v1/sessions"]
    assert len(posts) == 3 and len({s.key for s in posts}) == 1
    assert gap(posts) >= 0.95


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("3") == 3 and retry_after("0") == 0
    assert retry_after(formatdate(time.time() - 60, usegmt=True)) == 0  # past: at once
    assert 8 < (retry_after(formatdate(time.time() + 10, usegmt=True)) or 0) <= 10
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("nan") is None and retry_after("-5") == 0


def test_check_raises_command_failed_with_the_result() -> None:
    ok = CommandResult(stdout="hi\n", stderr="", exit_code=0)
    assert ok.check() is ok
    failed = CommandResult(stdout="", stderr="no such file\n", exit_code=2)
    with pytest.raises(CommandFailed, match="exited with 2: no such file") as raised:
        failed.check()
    assert raised.value.result is failed and isinstance(raised.value, errors.TetherError)
    with pytest.raises(CommandFailed, match="timed out"):
        CommandResult(stdout="", stderr="", exit_code=124, timed_out=True).check()
