"""Which surface's error shape a path answers in, where no route of a surface serves it.

An unknown path under a surface's prefix answers in its reference's error shape, never in
another surface's (Openctrol's and SentinelStacks' WebSocket paths are the relay's, yet their
own). Paths under no surface's prefix answer in OnMemOS's (the load balancer's default
backend).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from werkzeug.wrappers import Response

from tether.core.models import utcnow
from tether.errors import Invalid, TetherError, Timeout
from tether.surfaces.http import json_response, request_id

Renderer = Callable[[TetherError, int], Response]
# Kubently's code words where they differ from the status's own name.
_CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 408: "TIMEOUT", 429: "RATE_LIMITED",
          500: "INTERNAL_ERROR"}  # fmt: skip


def code_of(error: TetherError, status: int) -> str:
    code = error.details.get("code")
    if isinstance(code, str):
        return code
    return _CODES.get(status) or HTTPStatus(status).name


# Kubently's codes: the document's table, by error class; an error's own code only where it
# is one of these (another surface's vocabulary, AUTH_TOKEN_MISSING say, is not Kubently's).
_KUBENTLY_CODES = {"COMMAND_FORBIDDEN", "VALIDATION_ERROR", "RATE_LIMITED", "TIMEOUT"}
_VALIDATION = {"VALIDATION_FAILED", "MISSING_REQUIRED_FIELD", "INVALID_PARAMETER"}


def kubently(error: TetherError, status: int) -> Response:
    """docs/specs/kubently-api.md, "Error Response Format" (and "Validation Errors": every
    field). `detail` repeats the message: the real server is FastAPI, whose clients read it."""
    own = error.details.get("code")
    message = error.message
    if isinstance(error, Timeout):
        status = 408
    code = own if own in _KUBENTLY_CODES else _CODES.get(status) or HTTPStatus(status).name
    details: dict[str, object] = {"code": code}
    details.update((k, v) for k, v in error.details.items() if k != "code")
    if error.field:
        details["field"] = error.field
    if isinstance(error, Invalid) and own in _VALIDATION:
        message, details["code"] = "Validation failed", "VALIDATION_ERROR"
        details["errors"] = [{"field": f, "message": m} for f, m in error.problems] or [
            {"field": error.field, "message": error.message}
        ]
    return json_response(
        {
            "error": message,
            "detail": error.message,
            "details": details,
            "request_id": request_id(),
            "timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        status,
        {"X-API-Version": "1.0.0"},
    )


# Openctrol's own code words (the real agent's); another surface's (AUTH_TOKEN_INVALID,
# VALIDATION_FAILED, ...) give way to the status's word.
_OPENCTROL_CODES = {"session_creation_failed"}


def openctrol(error: TetherError, status: int) -> Response:
    """docs/specs/openctrol-api.md, "Error Responses": a code word and a sentence."""
    own = error.details.get("code")
    code = own if own in _OPENCTROL_CODES else _CODES.get(status) or HTTPStatus(status).name
    body = {"error": str(code).lower(), "details": error.message, "request_id": request_id()}
    return json_response(body, status)


def sentinelstacks(error: TetherError, status: int) -> Response:
    """docs/specs/sentinelstacks-api.md, "Error Handling"."""
    return json_response({"error": error.message, "request_id": request_id()}, status)


# (prefix, renderer): the base paths of the surfaces that are packages (DESIGN.md's table).
PACKAGES: tuple[tuple[str, Renderer], ...] = (
    ("/debug", kubently),
    ("/agent", kubently),
    ("/executor", kubently),
    ("/openctrol", openctrol),
    ("/v1/auth", sentinelstacks),
    ("/v1/agents", sentinelstacks),
    ("/v1/images", sentinelstacks),
    ("/v1/registry", sentinelstacks),
    ("/v1/health", sentinelstacks),
    ("/v1/packages", sentinelstacks),
    ("/api/v1/packages", sentinelstacks),
)


def renderer_for(path: str) -> Renderer:
    """The error renderer of the surface `path` belongs to."""
    from tether.targets import target_for

    if target_for(path) == "streamspace":
        from tether.surfaces import streamspace

        return streamspace.render_error
    for prefix, renderer in PACKAGES:
        if path == prefix or path.startswith(prefix + "/"):
            return renderer
    from tether.surfaces import onmemos

    return onmemos.render_error


def render(path: str, error: TetherError, status: int) -> Response:
    return renderer_for(path)(error, status)
