"""Which surface's error shape a path answers in, where no route of a surface serves it.

Kubently, Openctrol and SentinelStacks are not built yet, but their paths are theirs already:
an unknown path under one of their prefixes answers in its reference's error shape, never in
another surface's. Paths under no surface's prefix answer in OnMemOS's (the load balancer's
default backend).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from http import HTTPStatus

from werkzeug.wrappers import Response

from tether.core.models import utcnow
from tether.errors import TetherError
from tether.surfaces.http import json_response

Renderer = Callable[[TetherError, int], Response]
# Kubently's code words where they differ from the status's own name.
_CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 408: "TIMEOUT", 429: "RATE_LIMITED"}


def code_of(error: TetherError, status: int) -> str:
    code = error.details.get("code")
    if isinstance(code, str):
        return code
    return _CODES.get(status) or HTTPStatus(status).name


def kubently(error: TetherError, status: int) -> Response:
    """docs/specs/kubently-api.md, "Error Response Format"."""
    details: dict[str, object] = {"code": code_of(error, status)}
    if error.field:
        details["field"] = error.field
    return json_response(
        {
            "error": error.message,
            "details": details,
            "request_id": f"req-{uuid.uuid4().hex[:12]}",
            "timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        status,
    )


def openctrol(error: TetherError, status: int) -> Response:
    """docs/specs/openctrol-api.md, "Error Responses": a code word and a sentence."""
    body = {"error": code_of(error, status).lower(), "details": error.message}
    return json_response(body, status)


def sentinelstacks(error: TetherError, status: int) -> Response:
    """docs/specs/sentinelstacks-api.md, "Error Handling"."""
    return json_response({"error": error.message}, status)


# (prefix, renderer): the planned surfaces' base paths (DESIGN.md's table).
PLANNED: tuple[tuple[str, Renderer], ...] = (
    ("/debug", kubently),
    ("/agent", kubently),
    ("/executor", kubently),
    ("/openctrol", openctrol),
    ("/v1/auth", sentinelstacks),
    ("/v1/agents", sentinelstacks),
    ("/v1/images", sentinelstacks),
    ("/v1/registry", sentinelstacks),
)


def renderer_for(path: str) -> Renderer:
    """The error renderer of the surface `path` belongs to."""
    from tether.targets import target_for

    if target_for(path) == "streamspace":
        from tether.surfaces import streamspace

        return streamspace.render_error
    for prefix, renderer in PLANNED:
        if path == prefix or path.startswith(prefix + "/"):
            return renderer
    from tether.surfaces import onmemos

    return onmemos.render_error


def render(path: str, error: TetherError, status: int) -> Response:
    return renderer_for(path)(error, status)
