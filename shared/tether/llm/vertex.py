"""Gemini on Vertex AI through `google-genai` (`vertexai=True`), streaming.

Credentials are the environment's (Application Default Credentials: the service account Tether
runs as) unless given. Error messages are written here: the library's quote the response body.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from tether.core.llm import Done, Message, ModelEvent, ModelRequest, TextDelta, ToolCall
from tether.errors import Invalid, Unavailable

# Ids Tether makes up for calls Gemini gave none: never sent back to Gemini as if its own.
GENERATED_ID_PREFIX = "tether-call-"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
# Gemini 3 refuses a function call sent back without the thought signature that came with it
# (400). Signatures are kept per call id, in memory and bounded; a call whose signature is not
# here (another instance answered, or an old conversation) gets the value Google documents for
# a history it did not produce.
_SIGNATURES_KEPT = 2048
SKIP_SIGNATURE = b"skip_thought_signature_validator"
# Google OAuth access tokens, for the credentials found in the environment.
_ACCESS_TOKEN = re.compile(r"ya29\.[\w.-]+")


class VertexGemini:
    """`project` and `location` name the Vertex AI endpoint; `base_url` replaces it (tests),
    `credentials` the environment's, `client` the `google.genai.Client` built on first use.
    `timeout` bounds each request, in seconds."""

    name = "vertex"

    def __init__(
        self,
        project: str,
        location: str,
        *,
        base_url: str | None = None,
        credentials: Any = None,
        client: Any = None,
        timeout: float = 60.0,
    ) -> None:
        self._project = project
        self._location = location
        self._base_url = base_url
        self._credentials = credentials
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._signatures: OrderedDict[str, bytes] = OrderedDict()

    def _keep_signature(self, call_id: str, signature: bytes | None) -> None:
        if not signature:
            return
        with self._lock:
            self._signatures[call_id] = signature
            while len(self._signatures) > _SIGNATURES_KEPT:
                self._signatures.popitem(last=False)

    def _signature(self, call_id: str) -> bytes | None:
        with self._lock:
            return self._signatures.get(call_id)

    def __repr__(self) -> str:
        return f"VertexGemini(project={self._project!r}, location={self._location!r})"

    def _genai(self) -> Any:
        with self._lock:
            if self._client is None:
                from google import genai  # heavy: imported on first use (DESIGN.md, rule 2)
                from google.genai import types

                options: dict[str, Any] = {"timeout": int(self._timeout * 1000)}  # ms
                if self._base_url:
                    options["base_url"] = self._base_url
                # No retry_options: the library then tries once, and the caller decides.
                self._client = genai.Client(
                    vertexai=True,
                    project=self._project,
                    location=self._location,
                    credentials=self._credentials,
                    http_options=types.HttpOptions(**options),
                )
            return self._client

    def stream(self, request: ModelRequest) -> Iterator[ModelEvent]:
        from google.genai import types

        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            # Tether runs the tools itself: the library must not call anything.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if request.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name,
                            description=t.description,
                            parameters_json_schema=t.parameters,
                        )
                        for t in request.tools
                    ]
                )
            ]

        calls: list[ToolCall] = []
        finish: str | None = None
        input_tokens = output_tokens = 0
        responses: Any = None
        try:
            responses = self._genai().models.generate_content_stream(
                model=request.model,
                contents=_contents(request.messages, types, self._signature),
                config=config,
            )
            for response in responses:
                usage = response.usage_metadata
                if usage is not None:
                    input_tokens = usage.prompt_token_count or input_tokens
                    output_tokens = (usage.candidates_token_count or 0) + (
                        usage.thoughts_token_count or 0
                    ) or output_tokens
                if not response.candidates:
                    continue
                candidate = response.candidates[0]
                parts = candidate.content.parts if candidate.content is not None else None
                for part in parts or ():
                    if part.function_call is not None:
                        fc = part.function_call
                        call = ToolCall(
                            id=fc.id or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:16]}",
                            name=fc.name or "",
                            arguments=dict(fc.args or {}),
                        )
                        self._keep_signature(call.id, part.thought_signature)
                        calls.append(call)
                        yield call
                    elif part.text and not part.thought:
                        yield TextDelta(part.text)
                if candidate.finish_reason is not None:
                    reason = getattr(candidate.finish_reason, "value", str(candidate.finish_reason))
                    finish = _FINISH.get(reason, reason.lower())
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from None
        finally:
            if responses is not None and hasattr(responses, "close"):
                responses.close()  # releases the connection when the caller stops early
        if finish is None:
            # The stream ended without its last event: the answer was cut short.
            raise Unavailable("Vertex AI ended the answer early")
        if calls and finish == "stop":
            finish = "tool_calls"
        yield Done(input_tokens, output_tokens, finish, tuple(calls))

    def _map_error(self, exc: Exception) -> Exception | None:
        """Our error for one the library or its transports raised; None: not one of those."""
        from google.auth import exceptions as auth_errors
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            code = exc.code or 0
            if code in (401, 403):
                # 403 is also Vertex AI's answer for a project where its API is not enabled.
                return Unavailable(
                    f"Vertex AI refused Tether's credential (HTTP {code}): check the service "
                    "account's roles and that the Vertex AI API is enabled in the project"
                )
            if code in (408, 429) or code >= 500 or not 400 <= code < 500:
                return Unavailable(f"Vertex AI is unavailable (HTTP {code})")
            said = self._redact(exc.message if isinstance(exc.message, str) else "")
            detail = f": {said[:300]}" if said else ""
            return Invalid(f"Vertex AI refused the request (HTTP {code}){detail}")
        if isinstance(exc, auth_errors.GoogleAuthError):
            return Unavailable("could not obtain Google credentials for Vertex AI")
        if isinstance(exc, RuntimeError) and "API token" in str(exc):
            # The library's words for credentials that gave no token.
            return Unavailable("could not obtain Google credentials for Vertex AI")
        if _is_transport_error(exc):
            return Unavailable(f"Vertex AI could not be reached ({type(exc).__name__})")
        if isinstance(exc, json.JSONDecodeError | errors.UnknownApiResponseError):
            return Unavailable("Vertex AI sent a malformed answer")
        return None

    def _redact(self, text: str) -> str:
        """`text` without the access token Tether sent (should a provider ever quote it)."""
        token = getattr(self._credentials, "token", None)
        if isinstance(token, str) and token:
            text = text.replace(token, "[redacted]")
        return _ACCESS_TOKEN.sub("[redacted]", text)


def _is_transport_error(exc: Exception) -> bool:
    import httpx

    if isinstance(exc, httpx.HTTPError):
        return True
    try:  # the library may speak through httpx2 or requests as well
        import httpx2

        if isinstance(exc, httpx2.HTTPError):
            return True
    except ImportError:
        pass
    try:
        import requests

        return isinstance(exc, requests.RequestException)
    except ImportError:
        return False


def _contents(
    messages: tuple[Message, ...], types: Any, signature: Callable[[str], bytes | None]
) -> list[Any]:
    """The conversation as Gemini contents: `user` and `model` turns; tool results are
    `function_response` parts of a user turn, assistant tool calls `function_call` parts.
    Neighbouring parts of one role share a turn (Gemini wants a turn's function responses
    together)."""
    names: dict[str, str] = {}
    contents: list[Any] = []

    def add(role: str, parts: list[Any]) -> None:
        if not parts:
            return
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))

    for m in messages:
        if m.role == "system":
            continue  # the system instruction
        if m.role == "user":
            add("user", [types.Part(text=m.content)])
        elif m.role == "assistant":
            parts = [types.Part(text=m.content)] if m.content else []
            for i, c in enumerate(m.tool_calls):
                names[c.id] = c.name
                # Only a step's first call carries a signature (parallel calls share it).
                kept = signature(c.id) or (SKIP_SIGNATURE if i == 0 else None)
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(
                            id=_own_id(c.id), name=c.name, args=c.arguments
                        ),
                        thought_signature=kept,
                    )
                )
            add("model", parts)
        else:
            name = m.name or names.get(m.tool_call_id or "", "tool")
            response = types.FunctionResponse(
                id=_own_id(m.tool_call_id), name=name, response={"output": m.content}
            )
            add("user", [types.Part(function_response=response)])
    return contents


def _own_id(call_id: str | None) -> str | None:
    """Gemini's own call id, sent back; None for one Tether made up."""
    if not call_id or call_id.startswith(GENERATED_ID_PREFIX):
        return None
    return call_id
