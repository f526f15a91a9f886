"""The offline model: NOT a language model. A deterministic stand-in so that every flow
(chat, tool calls, tool results, events) works on a laptop with no model provider configured.

What it does with the last message of a conversation:

- a user message `run: <command>` while a tool named `shell` is offered: calls `shell` with
  `{"command": <command>}`; `python: <code>` calls `python` with `{"code": <code>}`;
  `read: <path>` calls `read_file` with `{"path": <path>}`; `write: <path> <content>` calls
  `write_file` with `{"path": <path>, "content": <content>}` (each only when that tool is
  offered; otherwise it is an ordinary message). The answer stops with "tool_calls".
- any other user message: streams, word by word,
  `Offline model (not a language model) — you said: <text>`.
- tool results (the messages after the assistant's tool calls): streams a summary holding each
  tool's name and output verbatim.

Token counts are words: the words of every message in, the words of the answer out. The same
request always gives the same answer, tool-call ids included. `max_tokens` cuts the text
answer to that many words (stop reason "length").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from tether.core.llm import Done, Message, ModelEvent, ModelRequest, TextDelta, ToolCall

PREFIX = "Offline model (not a language model)"

# `<prefix>: <rest>` → (tool, function of rest giving its arguments, or None: not a call).
_CONVENTIONS: dict[str, tuple[str, Any]] = {
    "run": ("shell", lambda rest: {"command": rest}),
    "python": ("python", lambda rest: {"code": rest}),
    "read": ("read_file", lambda rest: {"path": rest.strip()}),
    "write": ("write_file", lambda rest: _write_arguments(rest)),
}
_CONVENTION = re.compile(r"^\s*(run|python|read|write):[ \t]*(.*)$", re.DOTALL)
_WORD = re.compile(r"\S+\s*")


def _write_arguments(rest: str) -> dict[str, str] | None:
    parts = rest.strip().split(None, 1)
    if not parts:
        return None
    # The content keeps its own whitespace and newlines after the one separating it.
    content = re.sub(r"^\S+\s?", "", rest.lstrip(), count=1) if len(parts) == 2 else ""
    return {"path": parts[0], "content": content}


def _words(text: str) -> int:
    return len(text.split())


class OfflineModel:
    """Deterministic and not a language model (see the module docstring)."""

    name = "offline"

    def stream(self, request: ModelRequest) -> Iterator[ModelEvent]:
        input_tokens = sum(_words(m.content) for m in request.messages)
        call = self._tool_call(request)
        if call is not None:
            yield call
            out = _words(json.dumps(call.arguments))
            yield Done(input_tokens, out, "tool_calls", (call,))
            return
        words = _WORD.findall(self._reply(request.messages))
        stop = "stop"
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, stop = words[: max(request.max_tokens, 0)], "length"
        for word in words:
            yield TextDelta(word)
        yield Done(input_tokens, len(words), stop)

    @staticmethod
    def _tool_call(request: ModelRequest) -> ToolCall | None:
        if not request.messages or request.messages[-1].role != "user":
            return None
        match = _CONVENTION.match(request.messages[-1].content)
        if match is None:
            return None
        tool, arguments_of = _CONVENTIONS[match[1]]
        if tool not in {t.name for t in request.tools}:
            return None
        arguments = arguments_of(match[2])
        if arguments is None:
            return None
        # Same request, same id; the conversation's length keeps a repeated command's calls
        # apart within one conversation.
        seed = json.dumps([len(request.messages), tool, arguments], sort_keys=True)
        call_id = "call_offline_" + hashlib.sha256(seed.encode()).hexdigest()[:16]
        return ToolCall(id=call_id, name=tool, arguments=arguments)

    @staticmethod
    def _reply(messages: tuple[Message, ...]) -> str:
        if messages and messages[-1].role == "tool":
            return _summary(messages)
        for message in reversed(messages):
            if message.role == "user":
                return f"{PREFIX} — you said: {message.content}"
        return f"{PREFIX} — there is no message to answer."


def _summary(messages: tuple[Message, ...]) -> str:
    """The tool results at the end of the conversation, each with its tool's name and output."""
    start = len(messages)
    while start > 0 and messages[start - 1].role == "tool":
        start -= 1
    names: dict[str, str] = {}
    for message in messages[:start]:
        for call in message.tool_calls:
            names[call.id] = call.name
    lines = [f"{PREFIX} — tool results:"]
    for message in messages[start:]:
        name = message.name or names.get(message.tool_call_id or "", "tool")
        lines.append(f"{name}: {message.content}")
    return "\n".join(lines)
