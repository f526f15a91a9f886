"""An AI agent's chat through Tether, next to calling the same model server directly, in the
same run: the model is a local OpenAI-compatible server speaking the API at the wire
(tests/fakes/openai_server.py), answering at once, so what is measured is Tether's own cost.

- time to first token: `openai`'s client streaming from the server directly, first text delta
  after the request, next to a chat message over the agent's WebSocket (through `tether up`:
  the relay, the store, the conversation's writes, the model call) to its first
  `stream_chunk`;
- messages per second on one agent (one socket, each message answered before the next),
  next to model calls per second made directly.

Prints figures; asserts only correctness (every answer whole). About 10 s in `make test`;
TETHER_BENCH_CHAT_ROUNDS makes the samples more.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from openai import OpenAI

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_sentinelstacks_agents import bearer, create_agent, ws_url
from tests.fakes.openai_server import Answer, FakeOpenAI

ROUNDS = int(os.environ.get("TETHER_BENCH_CHAT_ROUNDS", "20"))
REPLY = "A short answer of a few words streamed in pieces."


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.script = lambda body: Answer(text=REPLY)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stack(model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("chatbench") / "home"
    srv = start_server(home, {"TETHER_MODEL_PROVIDER": "openai",
                              "TETHER_MODEL_BASE_URL": model.base_url})  # fmt: skip
    yield srv
    srv.stop()


def direct(model: FakeOpenAI) -> tuple[list[float], float]:
    """First-token times and calls per second, straight to the model server."""
    client = OpenAI(base_url=model.base_url, api_key="none", max_retries=0)
    firsts: list[float] = []
    started = time.perf_counter()
    for _ in range(ROUNDS):
        sent = time.perf_counter()
        first = None
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - sent
                text += chunk.choices[0].delta.content
        assert text == REPLY and first is not None
        firsts.append(first)
    return firsts, ROUNDS / (time.perf_counter() - started)


def through_tether(stack: Server, agent_id: str) -> tuple[list[float], float]:
    """First-token times and messages per second, over the agent's chat socket."""

    async def run() -> tuple[list[float], float]:
        firsts: list[float] = []
        async with (
            aiohttp.ClientSession(headers=bearer(stack.key)) as http,
            http.ws_connect(ws_url(stack, agent_id, "chat")) as ws,
        ):
            await ws.receive()  # welcome
            started = time.perf_counter()
            for i in range(ROUNDS):
                sent = time.perf_counter()
                await ws.send_json({"type": "message", "content": f"hi {i}"})
                first = None
                while True:
                    frame = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
                    if frame["type"] == "stream_chunk" and first is None:
                        first = time.perf_counter() - sent
                    if frame["type"] in ("stream_end", "error"):
                        break
                assert frame["type"] == "stream_end" and frame["content"] == REPLY, frame
                assert first is not None
                firsts.append(first)
            return firsts, ROUNDS / (time.perf_counter() - started)

    return asyncio.run(run())


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.1f} ms, p90 " \
        f"{sorted(samples)[int(len(samples) * 0.9) - 1] * 1000:.1f} ms"  # fmt: skip


def test_chat_cost_next_to_the_model_alone(stack: Server, model: FakeOpenAI) -> None:
    agent = create_agent(stack, stack.key, {"name": "bench", "model": "m"})
    through_tether(stack, agent["id"])  # warm: the model client's import, the first turn
    direct(model)
    d_first, d_rate = direct(model)
    t_first, t_rate = through_tether(stack, agent["id"])
    ratio = statistics.median(t_first) / statistics.median(d_first)
    print(f"\nchat, {ROUNDS} rounds, one agent, model server on loopback:")
    print(f"  time to first token   direct {ms(d_first)}   through Tether {ms(t_first)}"
          f"   x{ratio:.1f}")  # fmt: skip
    print(f"  answers per second    direct {d_rate:.1f}/s   through Tether {t_rate:.1f}/s"
          f"   x{d_rate / t_rate:.1f} slower")  # fmt: skip
