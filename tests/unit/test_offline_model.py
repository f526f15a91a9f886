"""The offline model: deterministic, not a language model, and its tool conventions."""

from __future__ import annotations

from typing import Any

import pytest
from tether.core.llm import Done, Message, ModelEvent, ModelRequest, TextDelta, Tool, ToolCall
from tether.llm.offline import PREFIX, OfflineModel


def tool(name: str) -> Tool:
    return Tool(name=name, description=f"the {name} tool", parameters={"type": "object"})


ALL_TOOLS = tuple(tool(n) for n in ("shell", "python", "read_file", "write_file"))


def run(*messages: Message, tools: tuple[Tool, ...] = ALL_TOOLS, **kw: Any) -> list[ModelEvent]:
    request = ModelRequest(model="offline", messages=messages, tools=tools, **kw)
    return list(OfflineModel().stream(request))


def user(text: str) -> Message:
    return Message(role="user", content=text)


def text_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def only_call(events: list[ModelEvent]) -> ToolCall:
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "tool_calls"
    assert done.tool_calls == (calls[0],)
    assert not any(isinstance(e, TextDelta) for e in events)
    return calls[0]


def test_it_says_what_it_is_word_by_word() -> None:
    events = run(user("hello there, model"))
    assert text_of(events) == f"{PREFIX} — you said: hello there, model"
    assert "not a language model" in text_of(events)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == len(text_of(events).split())
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.input_tokens, done.output_tokens, done.stop_reason) == (3, len(deltas), "stop")


def test_the_same_request_gives_the_same_answer() -> None:
    for messages in [(user("hi"),), (user("run: ls -la"),), (user("write: a.txt x y"),)]:
        assert run(*messages) == run(*messages)
        assert OfflineModel().name == "offline"


@pytest.mark.parametrize(
    ("said", "name", "arguments"),
    [
        ("run: ls -la /tmp", "shell", {"command": "ls -la /tmp"}),
        ("python: print(1 + 1)", "python", {"code": "print(1 + 1)"}),
        (
            "python: for i in range(2):\n    print(i)",
            "python",
            {"code": "for i in range(2):\n    print(i)"},
        ),
        ("read: notes/todo.md", "read_file", {"path": "notes/todo.md"}),
        ("write: out.txt hello world", "write_file", {"path": "out.txt", "content": "hello world"}),
        (
            "write: out.txt line 1\nline 2",
            "write_file",
            {"path": "out.txt", "content": "line 1\nline 2"},
        ),
        ("write: empty.txt", "write_file", {"path": "empty.txt", "content": ""}),
    ],
)
def test_conventions_call_tools(said: str, name: str, arguments: dict[str, Any]) -> None:
    call = only_call(run(user(said)))
    assert (call.name, call.arguments) == (name, arguments)
    assert call.id.startswith("call_offline_")


def test_a_convention_without_its_tool_is_an_ordinary_message() -> None:
    events = run(user("run: ls"), tools=(tool("python"),))
    assert text_of(events) == f"{PREFIX} — you said: run: ls"
    assert not any(isinstance(e, ToolCall) for e in events)


def test_only_the_last_message_counts() -> None:
    events = run(user("run: ls"), Message(role="assistant", content="ok"), user("thanks"))
    assert text_of(events).endswith("you said: thanks")


def test_tool_results_are_summarised_with_each_output() -> None:
    first = only_call(run(user("run: ls")))
    second = ToolCall(id="call_2", name="read_file", arguments={"path": "a.txt"})
    events = run(
        user("run: ls"),
        Message(role="assistant", content="", tool_calls=(first, second)),
        Message(role="tool", content="a.txt\nb.txt", tool_call_id=first.id),
        Message(role="tool", content="contents of a", tool_call_id="call_2", name="read_file"),
    )
    text = text_of(events)
    assert text.startswith(PREFIX)
    assert "shell: a.txt\nb.txt" in text
    assert "read_file: contents of a" in text
    assert isinstance(events[-1], Done) and events[-1].stop_reason == "stop"


def test_a_repeated_command_gets_a_new_id_later_in_the_conversation() -> None:
    first = only_call(run(user("run: ls")))
    later = only_call(
        run(
            user("run: ls"),
            Message(role="assistant", content="", tool_calls=(first,)),
            Message(role="tool", content="a.txt", tool_call_id=first.id, name="shell"),
            user("run: ls"),
        )
    )
    assert later.id != first.id


def test_max_tokens_cuts_the_answer() -> None:
    events = run(user("one two three four five"), max_tokens=3)
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3
    done = events[-1]
    assert isinstance(done, Done) and (done.output_tokens, done.stop_reason) == (3, "length")


def test_no_user_message_still_ends_with_done() -> None:
    events = run(Message(role="system", content="be kind"))
    assert text_of(events).startswith(PREFIX)
    assert isinstance(events[-1], Done)
