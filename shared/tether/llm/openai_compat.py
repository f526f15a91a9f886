"""Any OpenAI-compatible chat completions endpoint (hosted APIs, Ollama, vLLM, llama.cpp's
server) through the `openai` library's sync client, streaming.

The API key goes to the client and nowhere else: error messages are written here (never the
library's, which can quote the provider's body, and a 401 body may quote the key), and what a
provider says about a refused request is passed on with the key cut out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tether.core.llm import Done, Message, ModelEvent, ModelRequest, TextDelta, ToolCall
from tether.errors import Invalid, Unavailable

# Local servers (Ollama, vLLM, llama.cpp) want no key, but the library insists on one.
NO_KEY = "no-key"
_FINISH = {"function_call": "tool_calls"}


@dataclass
class _PartialCall:
    """A tool call while its deltas arrive: the id and name come first, the arguments in
    pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAICompatible:
    """`base_url` is the API's root (…/v1). `api_key` None: the endpoint needs none. `timeout`
    bounds connecting and each wait for data, in seconds. `client` replaces the `openai.OpenAI`
    client built on first use (tests)."""

    name = "openai"

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float = 60.0, client: Any = None
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._client = client
        self._lock = threading.Lock()
        parts = urlsplit(base_url)
        # Where, for error messages: never a userinfo part the URL might carry.
        self._where = parts.hostname or base_url
        if parts.port:
            self._where += f":{parts.port}"

    def __repr__(self) -> str:
        return f"OpenAICompatible(base_url={self._where!r})"

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai  # heavy: imported on first use (DESIGN.md, rule 2)

                self._client = openai.OpenAI(
                    base_url=self._base_url,
                    api_key=self._api_key or NO_KEY,
                    timeout=self._timeout,
                    max_retries=0,  # the caller decides whether to try again
                )
            return self._client

    def stream(self, request: ModelRequest) -> Iterator[ModelEvent]:
        import openai

        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [_wire_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens

        partial: dict[int, _PartialCall] = {}
        calls: list[ToolCall] = []
        finish: str | None = None
        input_tokens = output_tokens = 0
        chunks: Any = None
        try:
            chunks = self._openai().chat.completions.create(**kwargs)
            for chunk in chunks:
                if chunk.usage is not None:
                    input_tokens = chunk.usage.prompt_tokens or 0
                    output_tokens = chunk.usage.completion_tokens or 0
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue  # n=1 is all Tether asks for
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield TextDelta(delta.content)
                        for d in delta.tool_calls or ():
                            p = partial.setdefault(_call_index(d, partial), _PartialCall())
                            p.id = p.id or (d.id or "")
                            if d.function is not None:
                                p.name = p.name or (d.function.name or "")
                                p.arguments.append(d.function.arguments or "")
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, choice.finish_reason)
                        # The calls are complete once the choice has finished.
                        for call in _complete(partial):
                            calls.append(call)
                            yield call
                        partial.clear()
        except openai.APIStatusError as exc:
            raise self._status_error(exc.status_code, _provider_message(exc)) from None
        except openai.APITimeoutError as exc:
            raise Unavailable(f"model provider at {self._where} did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise Unavailable(f"model provider at {self._where} could not be reached") from exc
        except openai.APIError:
            # An error event inside the stream, or an answer the library could not read.
            raise Unavailable(f"model provider at {self._where} failed while answering") from None
        except json.JSONDecodeError:
            raise Unavailable(f"model provider at {self._where} sent a malformed answer") from None
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                chunks.close()
        if finish is None:
            # The stream ended cleanly but the answer never finished: it was cut short.
            raise Unavailable(f"model provider at {self._where} ended the answer early")
        if calls and finish == "stop":
            finish = "tool_calls"  # some servers (Ollama) finish a tool-calling answer "stop"
        yield Done(input_tokens, output_tokens, finish, tuple(calls))

    def _status_error(self, status: int, said: str) -> Exception:
        if status in (401, 403):
            return Unavailable("model provider refused Tether's credential")
        if status in (408, 409, 429) or status >= 500:
            return Unavailable(f"model provider at {self._where} is unavailable (HTTP {status})")
        said = said.replace(self._api_key, "[redacted]") if self._api_key else said
        detail = f": {said[:300]}" if said else ""
        return Invalid(f"model provider refused the request (HTTP {status}){detail}")


def _provider_message(exc: Any) -> str:
    """The `message` of the provider's error body, if it has one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return ""


def _call_index(delta: Any, partial: dict[int, _PartialCall]) -> int:
    """The delta's call index; servers that send none start a new call with each new id."""
    if delta.index is not None:
        return int(delta.index)
    if not partial:
        return 0
    last = max(partial)
    if delta.id and partial[last].id and delta.id != partial[last].id:
        return last + 1
    return last


def _complete(partial: dict[int, _PartialCall]) -> list[ToolCall]:
    calls = []
    for index in sorted(partial):
        p = partial[index]
        text = "".join(p.arguments)
        try:
            arguments = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            raise Invalid("model returned invalid tool arguments", tool=p.name) from None
        if not isinstance(arguments, dict):
            raise Invalid("model returned invalid tool arguments", tool=p.name)
        calls.append(ToolCall(id=p.id or f"call_{index}", name=p.name, arguments=arguments))
    return calls


def _wire_message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            # Null content is what the API documents for an answer that only called tools.
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}
