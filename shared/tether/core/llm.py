"""What a conversation with a language model is made of, whatever the provider: the messages
sent, the tools offered, and what comes back while the answer streams (`ModelProvider`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """The model asks for `name` to run with `arguments`; its answer is a `tool` message with
    the same `id`."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message that asked for tools
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None  # a tool message: the tool's name


@dataclass(frozen=True)
class Tool:
    """A tool offered to the model: `parameters` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class Done:
    """The answer is complete: always the last thing a stream yields."""

    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str = "stop"  # stop | tool_calls | length | ...
    tool_calls: tuple[ToolCall, ...] = field(default=())  # every call the answer asked for


ModelEvent = TextDelta | ToolCall | Done
