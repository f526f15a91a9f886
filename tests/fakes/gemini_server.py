"""Gemini on Vertex AI at the wire, for the real `google-genai` client (`vertexai=True`).

POST /{version}/projects/{project}/locations/{location}/publishers/google/models/{model}
:streamGenerateContent?alt=sse answers with Server-Sent Events as Vertex streams them: each
event a `GenerateContentResponse` JSON (`candidates[0].content.parts` with `text` or
`functionCall` parts), the last one with `finishReason` and `usageMetadata`. Errors are
Google's JSON error body (`{"error": {"code", "message", "status"}}`).

Scripted like the OpenAI fake (`Answer`, `FakeCall`, `answer()`, `script`, `received`); the
model, project and location a request named are in `calls` (also readable from the path).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import Answer, FakeCall, ThreadedServer, split_text

__all__ = ["Answer", "FakeCall", "FakeGemini"]

_PATH = re.compile(
    r"^/(?P<version>[^/]+)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "safety": "SAFETY"}


class FakeGemini(ThreadedServer):
    """`url` is the client's `base_url`."""

    name = "gemini"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._post)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        match = _PATH.match(request.path)
        if match is None or match["method"] != "streamGenerateContent":
            return web.json_response(_error(404, f"no such method: {request.path}"), status=404)
        answer = self.next_answer(body)
        await self.stall(answer.stall)
        if answer.status != 200:
            return web.json_response(
                _error(answer.status, answer.error_message), status=answer.status
            )
        return await self.send_events(request, _events(answer, match["model"]), answer.cut_after)


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}


def _events(answer: Answer, model: str) -> list[str]:
    def event(parts: list[dict[str, Any]], finish: str | None = None) -> str:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
        if finish is not None:
            candidate["finishReason"] = finish
            body["usageMetadata"] = {
                "promptTokenCount": answer.input_tokens,
                "candidatesTokenCount": answer.output_tokens,
                "totalTokenCount": answer.input_tokens + answer.output_tokens,
            }
        else:
            body["usageMetadata"] = {"promptTokenCount": answer.input_tokens}
        return json.dumps(body)

    parts: list[list[dict[str, Any]]] = [[{"text": piece}] for piece in split_text(answer.text)]
    for call in answer.tool_calls:
        args = json.loads(call.arguments) if isinstance(call.arguments, str) else call.arguments
        fc: dict[str, Any] = {"name": call.name, "args": args}
        if call.id is not None:
            fc["id"] = call.id
        part: dict[str, Any] = {"functionCall": fc}
        if call.signature is not None:
            part["thoughtSignature"] = call.signature
        parts.append([part])
    finish = _FINISH.get(answer.finish_reason or "stop", (answer.finish_reason or "").upper())
    if not parts:
        parts = [[{"text": ""}]]
    # Vertex puts finishReason and the full usage on the last event, with the last parts.
    out = [event(p) for p in parts[:-1]]
    out.append(event(parts[-1], finish))
    return out


def fake_call(name: str, **arguments: Any) -> FakeCall:
    return FakeCall(name=name, arguments=arguments)
