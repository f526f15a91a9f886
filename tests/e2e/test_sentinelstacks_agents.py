"""SentinelStacks' agents against `tether up` (a real subprocess: its local agent starts each AI
agent's workspace in the sandbox), driven as its clients drive it:

- the web UI's client, web-ui/src/services/api.ts (repo satishgonella2024/sentinelstacks,
  commit 44bbaf4): `POST /v1/auth/login` then `Authorization: Bearer <token>`, `GET /v1/agents`
  reading `{agents: [...]}`, `POST /v1/agents` with `{name, description, model, systemPrompt,
  isMultimodal}`, `GET /v1/agents/{id}/conversations` reading an array, `.../{cid}` and
  `POST .../{cid}/messages` with `{role, content}`;
- the reference's chat and events WebSockets (docs/specs/sentinelstacks-api.md) and the
  repository's own chat frames `{role, content, timestamp}` (internal/api/websocket.go).

The model is the offline one (`make up`'s default, documented as not a language model): its
`run: <command>` asks for the shell tool, which runs in the agent's own workspace.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.conftest import emulator
from tests.e2e.conftest import Server, start_server

PASSWORD = "s3ntinel-pass"
UI_AGENT = {"name": "Helper", "description": "Answers questions", "model": "llama3",
            "systemPrompt": "You are terse.", "isMultimodal": False}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sentinel") / "home"
    # Sign-ins are limited to 5 a minute an address: this module signs in more than that.
    srv = start_server(home, {"TETHER_ADMIN_PASSWORD": PASSWORD,
                              "TETHER_CORS_ORIGINS": "https://ui.example",
                              "TETHER_RATE_LIMITS": "login=100"})  # fmt: skip
    yield srv
    srv.stop()


def login(srv: Server, username: str = "admin", password: str = PASSWORD) -> str:
    r = httpx.post(f"{srv.url}/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(srv: Server, name: str) -> str:
    """A second user (StreamSpace's user API, as an admin), signed in."""
    r = httpx.post(f"{srv.url}/api/v1/users", headers=bearer(srv.key),
                   json={"username": name, "password": PASSWORD + "x", "role": "user"})  # fmt: skip
    assert r.status_code in (200, 201), r.text
    return login(srv, name, PASSWORD + "x")


def create_agent(srv: Server, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.post(f"{srv.url}/v1/agents", json=body or UI_AGENT, headers=bearer(token),
                   timeout=60)  # fmt: skip
    assert r.status_code == 201, r.text
    agent: dict[str, Any] = r.json()
    deadline = time.monotonic() + 60
    while agent["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        agent = httpx.get(f"{srv.url}/v1/agents/{agent['id']}", headers=bearer(token)).json()
    assert agent["status"] == "running", agent
    return agent


def ws_url(srv: Server, agent_id: str, kind: str) -> str:
    return f"{srv.url.replace('http', 'ws', 1)}/v1/agents/{agent_id}/{kind}"


async def frames_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first of type `kind`."""
    seen = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 60)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        seen.append(frame)
        if frame.get("type") == kind:
            return seen


def test_login_answers_as_the_ui_and_the_document_read_it(stack: Server) -> None:
    r = httpx.post(f"{stack.url}/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    body = r.json()
    assert r.status_code == 200
    assert body["username"] == "admin" and body["expires"].endswith("Z")
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "admin"
    assert {"id", "email"} <= body["user"].keys()
    listed = httpx.get(f"{stack.url}/v1/agents", headers=bearer(body["token"]))
    assert listed.status_code == 200 and isinstance(listed.json()["agents"], list)

    wrong = httpx.post(f"{stack.url}/v1/auth/login", json={"username": "admin", "password": "x"})
    assert wrong.status_code == 401 and set(wrong.json()) == {"error", "request_id"}
    missing = httpx.post(f"{stack.url}/v1/auth/login", json={"username": "admin"})
    assert missing.status_code == 400 and "password" in missing.json()["error"]
    anonymous = httpx.get(f"{stack.url}/v1/agents")
    assert anonymous.status_code == 401 and set(anonymous.json()) == {"error", "request_id"}


def test_sign_ins_are_limited_per_address(tmp_path: Path, rate_window: Callable[[], None]) -> None:
    srv = start_server(tmp_path / "home", {"TETHER_RATE_LIMITS": "login=2"})
    try:
        rate_window()
        tries = [httpx.post(f"{srv.url}/v1/auth/login", json={"username": "x", "password": "y"})
                 for _ in range(3)]  # fmt: skip
        assert [t.status_code for t in tries] == [401, 401, 429]
        assert int(tries[-1].headers["Retry-After"]) > 0 and "sign-ins" in tries[-1].json()["error"]
    finally:
        srv.stop()


def test_cors_answers_listed_origins_only(stack: Server) -> None:
    listed = {"Origin": "https://ui.example"}
    r = httpx.get(f"{stack.url}/v1/health", headers=listed)
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    other = httpx.get(f"{stack.url}/v1/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    pre = httpx.options(f"{stack.url}/v1/agents", headers={
        **listed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
    assert pre.status_code == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]


def test_ui_agent_chat_streams_runs_tools_and_keeps_history(stack: Server) -> None:
    token = login(stack)
    agent = create_agent(stack, token, {**UI_AGENT, "tools": ["shell"]})
    assert agent["endpoints"]["chat"] == ws_url(stack, agent["id"], "chat")
    assert agent["systemPrompt"] == "You are terse." and agent["model"] == "llama3"

    async def scenario() -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            events = await http.ws_connect(ws_url(stack, agent["id"], "events"))
            hello = json.loads((await events.receive()).data)
            assert hello["type"] == "connected" and hello["data"]["agentId"] == agent["id"]
            status = json.loads((await events.receive()).data)
            assert status["event_type"] == "agent_status"
            assert status["data"]["status"] == "running"

            async with http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws:
                welcome = json.loads((await ws.receive()).data)
                assert welcome["type"] == "welcome" and welcome["role"] == "system"
                await ws.send_json({"type": "message", "content": "hello there",
                                    "message_id": "m-1"})  # fmt: skip
                said = await frames_until(ws, "stream_end")
                await ws.send_json(
                    {
                        "type": "message",
                        "message_id": "m-2",
                        "content": "run: echo made-by-tool > out.txt && cat out.txt",
                    }
                )
                tooled = await frames_until(ws, "stream_end")
            seen: list[dict[str, Any]] = []
            while not any(e.get("event_type") == "usage" for e in seen[-1:]) or len(seen) < 6:
                seen.append(json.loads((await asyncio.wait_for(events.receive(), 30)).data))
            await events.close()
            return welcome["conversation_id"], said + tooled, seen

    conversation, frames, events = asyncio.run(scenario())
    first = [f for f in frames if f.get("message_id") == "m-1"]
    kinds = [f["type"] for f in first]
    assert [f.get("event_type") for f in first[:2]] == ["thinking", "processing"]
    assert kinds[2] == "stream_start" and kinds[-1] == "stream_end"
    assert kinds.count("stream_chunk") >= 2
    text = "".join(f["content"] for f in first if f["type"] == "stream_chunk")
    assert "hello there" in text and first[-1]["content"] == text
    assert first[-1]["role"] == "assistant"

    second = [f for f in frames if f.get("message_id") == "m-2"]
    used = [f for f in second if f.get("event_type") == "tool_use"]
    result = [f for f in second if f["type"] == "tool_result"]
    assert used[0]["data"]["tool"] == "shell"
    assert result[0]["success"] is True and "made-by-tool" in result[0]["result"]["stdout"]
    assert "made-by-tool" in second[-1]["content"]  # the model saw the tool's output
    assert {"message", "processing", "tool_use", "tool_result", "usage"} <= {
        e.get("event_type") for e in events
    }

    # A reconnect continues the conversation; the UI's REST calls read the same history.
    listed = httpx.get(f"{stack.url}/v1/agents/{agent['id']}/conversations",
                       headers=bearer(token)).json()  # fmt: skip
    assert [c["id"] for c in listed] == [conversation] and listed[0]["agentId"] == agent["id"]

    async def again() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(headers=bearer(token)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            return dict(json.loads((await ws.receive()).data))

    assert asyncio.run(again())["conversation_id"] == conversation
    whole = httpx.get(f"{stack.url}/v1/agents/{agent['id']}/conversations/{conversation}",
                      headers=bearer(token)).json()  # fmt: skip
    roles = [m["role"] for m in whole["messages"]]
    assert roles[:2] == ["user", "assistant"] and roles.count("user") == 2
    assert whole["messages"][0]["content"] == "hello there"

    # The UI's send-message call: one whole reply.
    sent = httpx.post(
        f"{stack.url}/v1/agents/{agent['id']}/conversations/{conversation}/messages",
        json={"role": "user", "content": "and again", "agentId": agent["id"]},
        headers=bearer(token), timeout=60,
    )  # fmt: skip
    assert sent.status_code == 201 and sent.json()["role"] == "assistant"
    assert "and again" in sent.json()["content"]

    logs = httpx.get(f"{stack.url}/v1/agents/{agent['id']}/logs", headers=bearer(token)).json()
    assert any("shell" in line["message"] for line in logs["logs"])

    gone = httpx.delete(f"{stack.url}/v1/agents/{agent['id']}", headers=bearer(token))
    assert gone.status_code == 200 and gone.json() == {"id": agent["id"], "status": "stopping"}


def test_chat_refuses_before_the_upgrade_and_survives_garbage(stack: Server) -> None:
    token = login(stack)
    agent = create_agent(stack, token)  # no tools declared
    other = make_user(stack, "mallory")

    async def scenario() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            evil = {**bearer(token), "Origin": "https://evil.example"}
            for headers, status in ((bearer(other), 404), ({}, 401), (evil, 403)):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(ws_url(stack, agent["id"], "chat"), headers=headers)
                assert refused.value.status == status
            async with http.ws_connect(ws_url(stack, agent["id"], "chat"),
                                       headers=bearer(token)) as ws:  # fmt: skip
                await ws.receive()  # welcome
                await ws.send_str("not json")
                await ws.send_bytes(b"\x00\x01")
                await ws.send_json({"type": "launch"})
                await ws.send_json({"type": "tool_request", "tool": "shell", "request_id": "r1",
                                    "parameters": {"command": "id"}})  # fmt: skip
                await ws.send_json({"role": "user", "content": "plain frame"})
                frames = await frames_until(ws, "response")
                await ws.send_str("x" * (70 * 1024))
                closing = await asyncio.wait_for(ws.receive(), 30)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1009
                return frames

    frames = asyncio.run(scenario())
    errors = [f for f in frames if f.get("type") == "error"]
    assert len(errors) == 3 and all(f["error"] for f in errors)
    refused = next(f for f in frames if f.get("type") == "tool_result")
    assert refused["request_id"] == "r1" and refused["success"] is False
    assert "does not declare" in refused["result"]["error"]
    echo = next(f for f in frames if f.get("role") == "user")
    assert echo["content"] == "plain frame" and echo["timestamp"]
    answer = frames[-1]
    assert answer["role"] == "assistant" and "plain frame" in answer["content"]


def test_a_slow_reader_gets_every_chunk_in_order(stack: Server) -> None:
    """A long answer (thousands of chunks) to a client that reads in fits: the turn waits for
    it (frames are queued a few dozen at a time, not all), and nothing is lost or reordered."""
    token = login(stack)
    agent = create_agent(stack, token)
    words = [f"w{i}" for i in range(4000)]

    async def scenario() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession(headers=bearer(token)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            await ws.receive()
            await ws.send_json({"type": "message", "content": " ".join(words)})
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["type"] != "stream_end":
                if len(seen) % 500 == 0:
                    await asyncio.sleep(0.2)  # a reader busy elsewhere now and then
                seen.append(json.loads((await asyncio.wait_for(ws.receive(), 60)).data))
            return seen

    frames = asyncio.run(scenario())
    chunks = [f["content"] for f in frames if f["type"] == "stream_chunk"]
    assert len(chunks) > len(words)
    assert "".join(chunks) == frames[-1]["content"]
    assert frames[-1]["content"].split()[-len(words) :] == words


def test_on_firestore_and_pubsub(tmp_path: Path) -> None:
    """The same agent flow on the emulators: the store's queries have their indexes, the tool's
    exec goes over Pub/Sub, the events stream reads Firestore."""
    emulator("FIRESTORE_EMULATOR_HOST")
    emulator("PUBSUB_EMULATOR_HOST")
    srv = start_server(tmp_path / "home", {
        "TETHER_STORE": "firestore", "TETHER_BUS": "pubsub",
        "GOOGLE_CLOUD_PROJECT": f"e2e-{uuid.uuid4().hex[:8]}", "TETHER_ADMIN_PASSWORD": PASSWORD,
    })  # fmt: skip
    try:
        token = login(srv)
        agent = create_agent(srv, token, {**UI_AGENT, "tools": ["shell"]})

        async def scenario() -> tuple[list[dict[str, Any]], list[str]]:
            async with aiohttp.ClientSession(headers=bearer(token)) as http:
                events = await http.ws_connect(ws_url(srv, agent["id"], "events"))
                await events.receive()
                await events.receive()
                async with http.ws_connect(ws_url(srv, agent["id"], "chat")) as ws:
                    await ws.receive()
                    await ws.send_json({"type": "message", "content": "run: echo on-the-bus"})
                    frames = await frames_until(ws, "stream_end")
                kinds: list[str] = []
                while "usage" not in kinds:
                    frame = json.loads((await asyncio.wait_for(events.receive(), 30)).data)
                    kinds.append(frame.get("event_type", ""))
                await events.close()
                return frames, kinds

        frames, kinds = asyncio.run(scenario())
        ran = next(f for f in frames if f["type"] == "tool_result")
        assert "on-the-bus" in ran["result"]["stdout"]
        assert {"message", "tool_use", "usage"} <= set(kinds)
        listed = httpx.get(f"{srv.url}/v1/agents", headers=bearer(token)).json()["agents"]
        assert [a["id"] for a in listed] == [agent["id"]]
        logs = httpx.get(f"{srv.url}/v1/agents/{agent['id']}/logs?limit=5", headers=bearer(token))
        assert logs.status_code == 200 and len(logs.json()["logs"]) == 5
    finally:
        srv.stop()


def test_a_retried_create_makes_one_agent_and_a_sleeping_one_wakes_to_chat(stack: Server) -> None:
    token = login(stack)
    once = {**bearer(token), "Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    made = [httpx.post(f"{stack.url}/v1/agents", json=UI_AGENT, headers=once, timeout=60)
            for _ in range(2)]  # fmt: skip
    assert [r.status_code for r in made] == [201, 201]
    assert made[0].json()["id"] == made[1].json()["id"]
    agent = create_agent(stack, token, {"name": "sleeper"})
    paused = httpx.post(f"{stack.url}/v1/sessions/{agent['id']}/pause",
                        headers={"X-API-Key": stack.key}, timeout=60)  # fmt: skip
    assert paused.status_code == 200
    asleep = httpx.get(f"{stack.url}/v1/agents/{agent['id']}", headers=bearer(token)).json()
    assert asleep["status"] == "stopped"

    async def chat() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(headers=bearer(token)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            await ws.receive()
            await ws.send_json({"type": "message", "content": "wake up", "stream": False})
            return (await frames_until(ws, "response"))[-1]

    assert "wake up" in asyncio.run(chat())["content"]
    awake = httpx.get(f"{stack.url}/v1/agents/{agent['id']}", headers=bearer(token)).json()
    assert awake["status"] == "running"
