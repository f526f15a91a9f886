"""The `ModelProvider` contract, against every adapter: the offline model, and the real `openai`
and `google-genai` clients talking to wire fakes of their APIs on loopback ports."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.auth.credentials import Credentials
from tether.core.llm import Done, Message, ModelEvent, ModelRequest, TextDelta, Tool, ToolCall
from tether.core.ports import ModelProvider
from tether.errors import Invalid, TetherError, Unavailable
from tether.llm.offline import PREFIX, OfflineModel
from tether.llm.openai_compat import OpenAICompatible
from tether.llm.vertex import SKIP_SIGNATURE, VertexGemini

from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import Answer, FakeCall, FakeOpenAI, ThreadedServer

SECRET = "sk-test-SECRET-123"
TOKEN = "ya29.SECRET-TOKEN-456"  # the Vertex adapter's credential: an OAuth access token
MODEL = {"offline": "offline", "openai": "gpt-test", "vertex": "gemini-test"}
SHELL = Tool(
    name="shell",
    description="Run a shell command in the workspace.",
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
)
LOGGERS = ("", "openai", "httpx", "httpx2", "httpcore", "google_genai", "google", "urllib3")


class FakeCredentials(Credentials):  # type: ignore[misc]
    """Google credentials holding a fixed access token (AnonymousCredentials hold none, and
    the library refuses to send a request without one)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = TOKEN

    def refresh(self, request: Any) -> None:
        self.token = TOKEN


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini_fake() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    fake.start()
    yield fake
    fake.stop()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Harness:
    kind: str
    fake: ThreadedServer | None
    make: Callable[..., ModelProvider]  # (url=None, timeout=…) → a provider

    @property
    def provider(self) -> ModelProvider:
        return self.make()

    def request(self, *messages: Message, **kw: Any) -> ModelRequest:
        return ModelRequest(model=MODEL[self.kind], messages=messages, **kw)

    def expect_text(self, prompt: str, answer: str) -> str:
        """The answer to `prompt` this adapter will stream."""
        if self.fake is None:
            return f"{PREFIX} — you said: {prompt}"
        self.fake.answer(Answer(text=answer))
        return answer

    def expect_call(self, name: str, arguments: dict[str, Any]) -> str:
        """A prompt this adapter answers with that one tool call."""
        if self.fake is None:
            assert name == "shell"
            return f"run: {arguments['command']}"
        self.fake.answer(Answer(tool_calls=(FakeCall(name, arguments),)))
        return "Please list the files."

    @property
    def body(self) -> Any:
        assert self.fake is not None and self.fake.received
        return self.fake.received[-1].body


def make_harness(kind: str, request: pytest.FixtureRequest) -> Harness:
    if kind == "offline":
        return Harness(kind, None, lambda **_: OfflineModel())
    if kind == "openai":
        ofake: FakeOpenAI = request.getfixturevalue("openai_fake")
        ofake.reset()

        def make_openai(url: str | None = None, timeout: float = 10.0, key: str = SECRET) -> Any:
            return OpenAICompatible(url or ofake.base_url, key, timeout=timeout)

        return Harness(kind, ofake, make_openai)
    gfake: FakeGemini = request.getfixturevalue("gemini_fake")
    gfake.reset()

    def make_vertex(url: str | None = None, timeout: float = 10.0) -> Any:
        return VertexGemini(
            "tether-test",
            "us-central1",
            base_url=url or gfake.url,
            credentials=FakeCredentials(),
            timeout=timeout,
        )

    return Harness(kind, gfake, make_vertex)


@pytest.fixture(params=["offline", "openai", "vertex"])
def h(request: pytest.FixtureRequest) -> Harness:
    return make_harness(request.param, request)


@pytest.fixture(params=["openai", "vertex"])
def wire(request: pytest.FixtureRequest) -> Harness:
    return make_harness(request.param, request)


def user(text: str) -> Message:
    return Message(role="user", content=text)


def check_done_last(events: list[ModelEvent]) -> Done:
    assert events, "the stream yielded nothing"
    assert isinstance(events[-1], Done)
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1]


# -- answers -----------------------------------------------------------------------------------


def test_a_text_answer_streams_in_pieces_then_done(h: Harness) -> None:
    prompt = "What is the weather like today?"
    expected = h.expect_text(prompt, "It is sunny and warm, with a light breeze.")

    events = list(h.provider.stream(h.request(user(prompt))))

    done = check_done_last(events)
    deltas = events[:-1]
    assert all(isinstance(e, TextDelta) for e in deltas)
    assert len(deltas) >= 2
    assert "".join(e.text for e in deltas if isinstance(e, TextDelta)) == expected
    assert done.stop_reason == "stop"
    assert done.tool_calls == ()
    assert done.input_tokens > 0 and done.output_tokens > 0


def test_a_tool_call_comes_complete_and_again_in_done(h: Harness) -> None:
    prompt = h.expect_call("shell", {"command": "ls -l /tmp"})

    events = list(h.provider.stream(h.request(user(prompt), tools=(SHELL,))))

    done = check_done_last(events)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert calls[0].id
    assert calls[0].name == "shell"
    assert calls[0].arguments == {"command": "ls -l /tmp"}
    assert done.tool_calls == tuple(calls)
    assert done.stop_reason == "tool_calls"
    if h.kind == "openai":
        sent = h.body["tools"]
        assert sent == [
            {
                "type": "function",
                "function": {
                    "name": "shell",
                    "description": SHELL.description,
                    "parameters": SHELL.parameters,
                },
            }
        ]
    elif h.kind == "vertex":
        (declaration,) = h.body["tools"][0]["functionDeclarations"]
        assert declaration["name"] == "shell"
        assert declaration["description"] == SHELL.description
        schema = declaration.get("parametersJsonSchema", declaration.get("parameters_json_schema"))
        assert schema == SHELL.parameters


def test_text_and_several_tool_calls_in_one_answer(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(
        Answer(
            text="Let me look at both.",
            tool_calls=(
                FakeCall("shell", {"command": "ls"}),
                FakeCall("shell", {"command": "pwd", "cwd": {"nested": [1, 2]}}),
            ),
        )
    )

    events = list(wire.provider.stream(wire.request(user("look"), tools=(SHELL,))))

    done = check_done_last(events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert text == "Let me look at both."
    assert [c.arguments for c in calls] == [
        {"command": "ls"},
        {"command": "pwd", "cwd": {"nested": [1, 2]}},
    ]
    assert len({c.id for c in calls}) == 2
    assert done.tool_calls == tuple(calls)
    assert done.stop_reason == "tool_calls"
    assert (done.input_tokens, done.output_tokens) == (7, 5)


def test_a_conversation_with_a_tool_result_is_sent_whole(h: Harness) -> None:
    call = ToolCall(id="call_1", name="shell", arguments={"command": "ls"})
    messages = (
        Message(role="system", content="You are terse."),
        user("What files are there?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="a.txt\nb.txt", tool_call_id="call_1", name="shell"),
    )
    if h.fake is not None:
        h.fake.answer(Answer(text="There are two files: a.txt and b.txt."))

    events = list(h.provider.stream(h.request(*messages, tools=(SHELL,))))

    check_done_last(events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    if h.kind == "offline":
        assert "shell: a.txt\nb.txt" in text
    elif h.kind == "openai":
        assert h.body["messages"] == [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What files are there?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "shell", "arguments": '{"command": "ls"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
        ]
    else:
        assert h.body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
        assert h.body["contents"] == [
            {"role": "user", "parts": [{"text": "What files are there?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {
                            "id": "call_1",
                            "name": "shell",
                            "args": {"command": "ls"},
                        },
                        # A call whose signature Tether did not keep: Google's documented bypass.
                        "thoughtSignature": base64.b64encode(SKIP_SIGNATURE).decode(),
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "id": "call_1",
                            "name": "shell",
                            "response": {"output": "a.txt\nb.txt"},
                        }
                    }
                ],
            },
        ]


def test_a_gemini_thought_signature_goes_back_with_its_call(gemini_fake: FakeGemini) -> None:
    gemini_fake.reset()
    signature = base64.b64encode(b"opaque-signature-1").decode()
    gemini_fake.answer(
        Answer(tool_calls=(FakeCall("shell", {"command": "ls"}, signature=signature),)),
        Answer(text="Two files."),
    )
    provider = VertexGemini(
        "tether-test", "us-central1", base_url=gemini_fake.url, credentials=FakeCredentials()
    )
    first = (user("list"),)
    events = list(provider.stream(ModelRequest("gemini-test", first, tools=(SHELL,))))
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.id  # Gemini gave none: Tether's own, and no id goes back on the wire
    second = (
        *first,
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="a b", tool_call_id=call.id, name="shell"),
    )

    list(provider.stream(ModelRequest("gemini-test", second, tools=(SHELL,))))

    model_turn = gemini_fake.received[-1].body["contents"][1]
    assert model_turn == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "shell", "args": {"command": "ls"}},
                "thoughtSignature": signature,
            }
        ],
    }
    response = gemini_fake.received[-1].body["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "shell", "response": {"output": "a b"}}


def test_an_openai_server_finishing_tool_calls_with_stop_still_reports_tool_calls(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.reset()
    openai_fake.answer(
        Answer(tool_calls=(FakeCall("shell", {"command": "ls"}),), finish_reason="stop")
    )
    provider = OpenAICompatible(openai_fake.base_url, None, timeout=10)
    events = list(provider.stream(ModelRequest("m", (user("ls"),), tools=(SHELL,))))
    done = check_done_last(events)
    assert (done.stop_reason, len(done.tool_calls)) == ("tool_calls", 1)


def test_temperature_and_max_tokens_are_sent(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(text="Fine, thanks."))

    list(wire.provider.stream(wire.request(user("hi"), temperature=0.25, max_tokens=64)))

    body = wire.body
    if wire.kind == "openai":
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-test", 0.25, 64)
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert "tools" not in body
    else:
        assert wire.fake.received[-1].path.endswith("/models/gemini-test:streamGenerateContent")
        assert "/projects/tether-test/locations/us-central1/" in wire.fake.received[-1].path
        assert body["generationConfig"] == {"temperature": 0.25, "maxOutputTokens": 64}


def test_a_length_stop_is_reported(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(text="This answer was cut", finish_reason="length"))

    events = list(wire.provider.stream(wire.request(user("go on"))))

    assert check_done_last(events).stop_reason == "length"


# -- errors ------------------------------------------------------------------------------------


def test_an_unreachable_provider_is_unavailable(wire: Harness) -> None:
    provider = wire.make(url=closed_port_url())
    with pytest.raises(Unavailable):
        list(provider.stream(wire.request(user("hello"))))


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, Unavailable), (500, Unavailable), (503, Unavailable), (400, Invalid), (404, Invalid)],
)
def test_http_errors_map(wire: Harness, status: int, error: type[TetherError]) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(status=status, error_message="The model `x` does not exist"))
    with pytest.raises(error) as caught:
        list(wire.provider.stream(wire.request(user("hello"))))
    assert type(caught.value) is error
    assert caught.value.message


def test_a_refused_credential_is_unavailable(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(status=401, error_message="Request had invalid credentials."))
    with pytest.raises(Unavailable, match="credential"):
        list(wire.provider.stream(wire.request(user("hello"))))


def test_a_stream_cut_mid_way_is_unavailable_after_the_text_so_far(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(text="one two three four five six", cut_after=3))
    seen: list[ModelEvent] = []
    with pytest.raises(Unavailable):
        for event in wire.provider.stream(wire.request(user("count"))):
            seen.append(event)
    assert seen and all(isinstance(e, TextDelta) for e in seen)


def test_a_provider_too_slow_is_unavailable(wire: Harness) -> None:
    assert wire.fake is not None
    wire.fake.answer(Answer(text="late", stall=30))  # released when the fake stops
    provider = wire.make(timeout=0.3)
    with pytest.raises(Unavailable):
        list(provider.stream(wire.request(user("hello"))))


def test_invalid_tool_arguments_are_invalid(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    openai_fake.answer(Answer(tool_calls=(FakeCall("shell", '{"command": "ls"'),)))
    provider = OpenAICompatible(openai_fake.base_url, None, timeout=10)
    request = ModelRequest(model="m", messages=(user("ls"),), tools=(SHELL,))
    with pytest.raises(Invalid, match="model returned invalid tool arguments"):
        list(provider.stream(request))


def test_no_key_sends_a_placeholder(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    openai_fake.answer(Answer(text="Hi there."))
    provider = OpenAICompatible(openai_fake.base_url, None, timeout=10)
    list(provider.stream(ModelRequest(model="m", messages=(user("hi"),))))
    assert openai_fake.received[-1].headers["authorization"].startswith("Bearer ")


# -- secrets -----------------------------------------------------------------------------------


def secrecy_answer(case: str, secret: str) -> Answer:
    """What the fake answers in each case; its errors quote the credential back, as some
    providers' 401 bodies do."""
    return {
        "text": Answer(text="Here is an answer in words."),
        "tool call": Answer(tool_calls=(FakeCall("shell", {"command": "ls"}),)),
        "401": Answer(status=401, error_message=f"Incorrect API key provided: {secret}"),
        "400": Answer(status=400, error_message=f"bad request from key {secret}"),
        "500": Answer(status=500, error_message=f"internal error ({secret})"),
        "cut": Answer(text="one two three four", cut_after=2),
    }[case]


@pytest.mark.parametrize("case", ["text", "tool call", "401", "400", "500", "cut"])
def test_the_credential_never_leaves_the_request(
    wire: Harness, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert wire.fake is not None
    secret = SECRET if wire.kind == "openai" else TOKEN
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    wire.fake.answer(secrecy_answer(case, secret))
    provider = wire.make()
    seen: list[str] = [repr(provider)]
    try:
        for event in provider.stream(wire.request(user("hello"), tools=(SHELL,))):
            seen.append(repr(event))
    except TetherError as exc:
        seen += [str(exc), repr(exc), repr(exc.details), *traceback.format_exception(exc)]

    assert wire.fake.received[-1].headers["authorization"] == f"Bearer {secret}"
    assert caplog.records, "the client libraries logged nothing at DEBUG: is capture working?"
    formatter = logging.Formatter()
    seen += [formatter.format(r) for r in caplog.records]
    leaks = [s for s in seen if secret in s]
    assert not leaks


def test_importing_the_adapters_imports_no_client_library() -> None:
    code = (
        "import sys, tether.llm, tether.llm.offline, tether.llm.openai_compat, tether.llm.vertex\n"
        "heavy = [m for m in ('openai', 'google.genai', 'httpx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
