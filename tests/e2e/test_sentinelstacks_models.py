"""An AI agent whose model is an OpenAI-compatible endpoint (a local server speaking the API at
the wire, tests/fakes/openai_server.py), through `tether up`: the answer streams to the chat
socket as the model streams it, the tools the model asks for run in the agent's workspace,
and the model's key reaches the model and nothing else — not the agent's tools (the
workspace's environment and processes), not the stack's log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_sentinelstacks_agents import bearer, create_agent, frames_until, ws_url
from tests.fakes.openai_server import Answer, FakeCall, FakeOpenAI

KEY = "sk-test-SECRET-4f7d1c"
# What a curious agent would run to find its model's key.
SNOOP = "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ps -eo args; ls -la ~"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def model(fake: FakeOpenAI) -> FakeOpenAI:
    fake.reset()  # each test scripts its own answers and reads its own requests
    return fake


@pytest.fixture(scope="module")
def stack(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("models") / "home", {
        "TETHER_MODEL_PROVIDER": "openai", "TETHER_MODEL_BASE_URL": fake.base_url,
        "TETHER_MODEL_API_KEY": KEY, "TETHER_MODEL": "served-model",
    })  # fmt: skip
    yield srv
    srv.stop()


def test_the_model_streams_calls_tools_and_its_key_stays_with_it(
    stack: Server, model: FakeOpenAI
) -> None:
    model.answer(
        Answer(text="Let me look around.", tool_calls=(FakeCall("shell", {"command": SNOOP}),)),
        Answer(text="I looked; nothing of note in this workspace."),
    )
    agent = create_agent(stack, stack.key, {"name": "Snoop", "model": "gpt-x", "tools": ["shell"],
                                            "systemPrompt": "Be curious."})  # fmt: skip

    async def chat() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession(headers=bearer(stack.key)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            await ws.receive()  # welcome
            await ws.send_json({"type": "message", "content": "What is here?", "message_id": "q"})
            return await frames_until(ws, "stream_end")

    frames = asyncio.run(chat())
    kinds = [f["type"] for f in frames]
    assert kinds.index("stream_start") < kinds.index("stream_chunk") < kinds.index("tool_result")
    assert kinds[-1] == "stream_end" and all(f["message_id"] == "q" for f in frames)
    streamed = "".join(f["content"] for f in frames if f["type"] == "stream_chunk")
    assert streamed == "Let me look around.I looked; nothing of note in this workspace."
    assert frames[-1]["content"] == "I looked; nothing of note in this workspace."
    ran = next(f for f in frames if f["type"] == "tool_result")
    assert ran["success"] is True and "HOME=" in ran["result"]["stdout"]  # it did look

    # The model got the key, the prompt, the question and the tool's output, under the
    # operator's model name.
    first, second = model.received
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == "served-model" and first.body["stream"] is True
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert [m["role"] for m in second.body["messages"]] == ["system", "user", "assistant", "tool"]
    assert "HOME=" in second.body["messages"][-1]["content"]

    # Nothing the agent saw, and nothing the stack wrote, holds the key.
    assert KEY not in json.dumps(frames)
    assert KEY not in stack.log.read_text()
    logs = httpx.get(f"{stack.url}/v1/agents/{agent['id']}/logs", headers=bearer(stack.key))
    assert KEY not in logs.text


def test_a_model_that_is_down_is_an_error_frame_not_a_dead_socket(
    stack: Server, model: FakeOpenAI
) -> None:
    model.answer(Answer(status=503, error_message=f"overloaded (key {KEY})"), Answer(text="Back."))
    agent = create_agent(stack, stack.key, {"name": "Flaky", "model": "m"})

    async def chat() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with (
            aiohttp.ClientSession(headers=bearer(stack.key)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            await ws.receive()
            await ws.send_json({"type": "message", "content": "hi", "message_id": "a"})
            failed = await frames_until(ws, "error")
            await ws.send_json({"type": "message", "content": "again", "message_id": "b"})
            return failed, await frames_until(ws, "stream_end")

    failed, recovered = asyncio.run(chat())
    assert failed[-1]["message_id"] == "a" and KEY not in failed[-1]["error"]
    assert recovered[-1]["content"] == "Back."
    assert KEY not in stack.log.read_text()  # the provider's error quoted it: not logged
