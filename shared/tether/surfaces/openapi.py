"""Each surface's OpenAPI 3.1 document, made from its router: the pydantic models that validate
a request and make its answer are the schema, so the document cannot drift from the code.

Every operation lists its answers, the errors any operation may give (a credential refused,
a body or query refused, too large, rate-limited, a backend away), those its own route adds,
and its security. `page` is the interactive reference (Redoc, vendored from npm).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.wrappers import Request, Response

from tether.errors import NotFound
from tether.service.idempotency import MAX_KEY
from tether.surfaces.http import IDEMPOTENCY_KEY, READS, Operation, Router, json_response

REF = "#/components/schemas/{model}"
STATIC = Path(__file__).with_name("static")
REDOC = STATIC / "redoc.standalone.js"
_PATH_PARAM = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
IDEMPOTENCY_PARAMETER = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": "Sent again with the same request within 24 h, the first answer is given "
    "again and nothing is created twice; with another request, 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
}
# Statuses any operation may answer, whatever its route: a request head over the origin's
# limit (tether.origin.guard), a store or agent away.
ALWAYS = (431, 503)
EVENTS = "text/event-stream"
# One Server-Sent Event of a stream (its `data` a JSON object, as the operation says).
EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
    },
}


def document(
    router: Router,
    *,
    title: str,
    version: str,
    description: str,
    error: type[BaseModel],
    security: dict[str, dict[str, Any]],
    always: tuple[int, ...] = ALWAYS,
) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(error, "serialization")]
    listed = [op for op in router.operations.values() if op.listed]
    for op in listed:
        models += [(m, "validation") for m in (op.body, op.query) if m is not None]
        models += [(m, "serialization") for m in op.answers.values() if m is not None]
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in listed:
        paths.setdefault(path_of(op), {})[op.method.lower()] = _operation(
            op, refs, always, error, [{name: []} for name in security]
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security},
    }


def surface_of(op: Operation) -> str:
    return op.handler.__module__.split(".")[2]  # tether.surfaces.<surface>[.module]


def path_of(op: Operation) -> str:
    """The operation's path as OpenAPI writes it: /v1/sessions/{session_id}."""
    return _PATH_PARAM.sub(r"{\1}", op.path)


def _operation(
    op: Operation,
    refs: Mapping[Any, dict[str, Any]],
    always: tuple[int, ...],
    error: type[BaseModel],
    security: list[dict[str, list[str]]],
) -> dict[str, Any]:
    names = _PATH_PARAM.findall(op.path)
    parameters: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for n in names
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if op.idempotent:
        parameters.append(IDEMPOTENCY_PARAMETER)
    statuses = {*always, *op.errors}
    if not op.public:
        statuses.add(401)
        if op.method not in READS:  # a read-only API key
            statuses.add(403)
    if op.body is not None or op.query is not None:
        statuses.add(400)
    if op.body is not None or op.upload is not None or op.raw is not None:
        statuses |= {400, 413}
    if names:
        statuses.add(404)
    if op.idempotent:  # a malformed key; still running under it; used with another request
        statuses |= {400, 409, 422}
    responses: dict[str, Any] = {}
    for status, model in sorted(op.answers.items()):
        if status == 204:
            responses["204"] = {"description": HTTPStatus(204).phrase}
            continue
        if op.media == EVENTS and model is None and status < 300:  # Server-Sent Events
            responses[str(status)] = {"description": HTTPStatus(status).phrase,
                                      "content": {EVENTS: {"schema": EVENT}}}  # fmt: skip
            continue
        if op.media and model is None and status < 300:  # a file's bytes
            binary = {"schema": {"type": "string", "format": "binary"}}
            responses[str(status)] = {"description": HTTPStatus(status).phrase,
                                      "content": {op.media: binary}}  # fmt: skip
            continue
        schema = refs[(model, "serialization")] if model else {"type": "object"}
        responses[str(status)] = _answer(status, schema)
    for status in sorted(statuses - set(op.answers)):
        responses[str(status)] = _answer(status, refs[(error, "serialization")])
    operation: dict[str, Any] = {
        # Unique across the surfaces' documents too: onmemos_create_session_post.
        "operationId": f"{surface_of(op)}_{op.handler.__name__}_{op.method.lower()}",
        "summary": op.summary,
        "responses": responses,
        "security": [] if op.public else security,
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": not _all_optional(op.body),
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.upload is not None:
        form = {"type": "object", "required": [op.upload],
                "properties": {op.upload: {"type": "string", "format": "binary"}}}  # fmt: skip
        content = {"multipart/form-data": {"schema": form}}
        operation["requestBody"] = {"required": True, "content": content}
    if op.raw is not None:
        content = {op.raw: {"schema": {"type": "string", "format": "binary"}}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _answer(status: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": schema}},
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _all_optional(model: type[BaseModel]) -> bool:
    return not any(f.is_required() for f in model.model_fields.values())


def page(title: str, spec_url: str, script_url: str) -> str:
    """The interactive reference of one document."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title></head><body>"
        f"<redoc spec-url='{spec_url}'></redoc><script src='{script_url}'></script>"
        "</body></html>"
    )


@functools.cache
def redoc() -> bytes:
    return REDOC.read_bytes()


def serve(router: Router, surface: str, make: Callable[[], dict[str, Any]]) -> None:
    """Adds the document (`/openapi/<surface>.json`), its reference page (`/openapi/<surface>`)
    and the page's script to `router`, outside the document itself."""
    base = f"/openapi/{surface}"
    made = functools.cache(make)

    def spec(request: Request) -> Response:
        return json_response(made(), headers={"Cache-Control": "no-cache"})

    def reference(request: Request) -> Response:
        title = made()["info"]["title"]
        return Response(page(title, f"{base}.json", f"{base}/redoc.standalone.js"),
                        mimetype="text/html")  # fmt: skip

    def script(request: Request) -> Response:
        if not REDOC.exists():  # `make install` vendors it from npm
            raise NotFound("The reference page's script is not installed")
        return Response(redoc(), mimetype="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip

    for path, handler in ((f"{base}.json", spec), (base, reference),
                          (f"{base}/redoc.standalone.js", script)):  # fmt: skip
        router.route(path, ["GET"], public=True, listed=False)(handler)
