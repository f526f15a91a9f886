"""An OpenAI-compatible chat completions endpoint at the wire, for the real `openai` client.

POST /v1/chat/completions answers `stream=True` requests with Server-Sent Events exactly as the
API streams them: `data: {chat.completion.chunk}` lines (text split into several deltas,
tool-call deltas split across chunks by index), a finish chunk, a usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`.

Scripted per test: `answer(*answers)` queues canned `Answer`s (used in order), or `script` is a
function of the request body. `received` records every request (path, headers, JSON body).
An `Answer` can also be an HTTP error, a stall (to provoke the client's timeout) or a stream
cut off mid-way (the connection dropped without finishing the chunked body).

`ThreadedServer` and `Answer` are shared with the Gemini fake (`gemini_server.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackApp


@dataclass(frozen=True)
class FakeCall:
    """A tool call the fake model makes. `arguments` as a dict is sent as JSON; a str is sent
    as is (to send invalid JSON). `id` None: the Gemini fake sends no id, the OpenAI fake
    makes one up. `signature` is for the Gemini fake only."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None
    signature: str | None = None  # Gemini's thoughtSignature (base64) on the part


@dataclass(frozen=True)
class Answer:
    """One canned answer. `status` other than 200 answers that HTTP error with `error_message`
    in the API's error body. `stall` seconds pass before anything is sent. `cut_after` drops
    the connection after that many events (of the stream, before its end)."""

    text: str = ""
    tool_calls: tuple[FakeCall, ...] = ()
    input_tokens: int = 7
    output_tokens: int = 5
    finish_reason: str | None = None  # default: "tool_calls" when there are calls, else "stop"
    status: int = 200
    error_message: str = "scripted error"
    stall: float = 0.0
    cut_after: int | None = None


@dataclass(frozen=True)
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lowercased
    body: Any


def split_text(text: str, pieces: int = 3) -> list[str]:
    """`text` in at least two pieces (when it has two characters), at word boundaries where
    it has them, so a client sees several deltas whose join is the text."""
    words = text.split(" ")
    if len(words) >= 2:
        out = [w + " " for w in words[:-1]] + [words[-1]]
        return [w for w in out if w]
    if len(text) < 2:
        return [text] if text else []
    step = max(1, len(text) // pieces)
    return [text[i : i + step] for i in range(0, len(text), step)]


class ThreadedServer:
    """An aiohttp application on a free loopback port, served from a thread with its own event
    loop; `handle` answers every request. Stalled handlers are released by `stop`."""

    name = "fake"

    def __init__(self) -> None:
        self.url = ""
        self.received: list[Received] = []
        self._answers: deque[Answer] = deque()
        self.script: Callable[[Any], Answer] | None = None
        self._lock = threading.Lock()
        self._app = LoopbackApp(f"fake-{self.name}")
        self._stopping: asyncio.Event | None = None

    # -- scripting ---------------------------------------------------------------------------

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def next_answer(self, body: Any) -> Answer:
        with self._lock:
            if self._answers:
                return self._answers.popleft()
        if self.script is not None:
            return self.script(body)
        return Answer(text="No answer was scripted for this request.")

    def reset(self) -> None:
        with self._lock:
            self._answers.clear()
            self.received.clear()
            self.script = None

    # -- serving -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.received.append(
                Received(
                    path=request.path,
                    query=dict(request.query),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                )
            )
        return body

    async def stall(self, seconds: float) -> None:
        if seconds > 0 and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    async def send_events(
        request: web.Request, events: list[str], cut_after: int | None
    ) -> web.StreamResponse:
        """Each of `events` as one SSE event; with `cut_after`, the connection is dropped
        after that many (the chunked body never ends: the client sees a broken stream)."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i, data in enumerate(events):
            if cut_after is not None and i >= cut_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(f"data: {data}\n\n".encode())
            await asyncio.sleep(0)  # let each event leave as its own write
        await resp.write_eof()
        return resp

    def start(self) -> str:
        def make() -> web.Application:
            self._stopping = asyncio.Event()  # on the serving loop
            app = web.Application()
            self.routes(app)
            return app

        self.url = self._app.start(make, handler_cancellation=True)
        return self.url

    def stop(self) -> None:
        def release() -> None:  # stalled handlers
            assert self._stopping is not None
            self._stopping.set()

        if self._stopping is not None:
            self._app.stop(release, grace=0.05)


class FakeOpenAI(ThreadedServer):
    """`base_url` (…/v1) is what the client is given."""

    name = "openai"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        answer = self.next_answer(body)
        await self.stall(answer.stall)
        if answer.status != 200:
            return web.json_response(_error_body(answer), status=answer.status)
        model = body.get("model", "") if isinstance(body, dict) else ""
        usage = isinstance(body, dict) and (body.get("stream_options") or {}).get("include_usage")
        return await self.send_events(
            request, _chunks(answer, model, bool(usage)), answer.cut_after
        )


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(answer: Answer) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(answer.status, ("server_error", None))
    return {"error": {"message": answer.error_message, "type": kind, "param": None, "code": code}}


def _chunks(answer: Answer, model: str, include_usage: bool) -> list[str]:
    """The SSE data lines of one streamed chat completion, as the API sends them."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000}
    base["model"] = model

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return json.dumps(body)

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in split_text(answer.text)]
    for index, call in enumerate(answer.tool_calls):
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        first = {
            "index": index,
            "id": call.id or f"call_fake_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [first]}))
        # The arguments arrive in pieces, as real servers stream them.
        half = max(1, len(args) // 2)
        for piece in (args[:half], args[half:]):
            if piece:
                out.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
    finish = answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")
    out.append(chunk({}, finish))
    if include_usage:
        usage = {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens,
        }
        out.append(json.dumps({**base, "choices": [], "usage": usage}))
    out.append("[DONE]")
    return out
