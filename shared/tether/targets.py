"""The function targets, thin: parse, call a service, render. `functions/main.py` registers
them with functions-framework; the local origin calls them directly.

`ROUTES` is the one routing table: the local origin serves it, the cloud load balancer's URL
map is generated from the same list.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from tether import tracing

# (path prefix, target). Longest prefix wins.
ROUTES: list[tuple[str, str]] = [
    ("/v1/sessions", "onmemos"),
    ("/v1/cloudrun", "onmemos"),
    ("/health", "health"),
    ("/api/v1", "streamspace"),
    ("/debug", "kubently"),
    ("/agent", "kubently"),
    ("/executor", "kubently"),
    ("/admin", "kubently"),
    ("/audit", "kubently"),
    ("/healthz", "kubently"),
    ("/openctrol", "openctrol"),  # its WebSockets are the relay's (tether.relay)
    # SentinelStacks (its chat and events WebSockets are the relay's), and its registry
    # clients' package paths, one of them inside StreamSpace's /api/v1.
    ("/v1/auth", "sentinelstacks"),
    ("/v1/agents", "sentinelstacks"),
    ("/v1/images", "sentinelstacks"),
    ("/v1/registry", "sentinelstacks"),
    ("/v1/health", "sentinelstacks"),
    ("/v1/packages", "sentinelstacks"),
    ("/api/v1/packages", "sentinelstacks"),
    # Each surface's OpenAPI document and reference page, served by the surface itself.
    ("/openapi/onmemos", "onmemos"),
    ("/openapi/onmemos.json", "onmemos"),
    ("/openapi/streamspace", "streamspace"),
    ("/openapi/streamspace.json", "streamspace"),
    ("/openapi/kubently", "kubently"),
    ("/openapi/kubently.json", "kubently"),
    ("/openapi/openctrol", "openctrol"),
    ("/openapi/openctrol.json", "openctrol"),
    ("/openapi/sentinelstacks", "sentinelstacks"),
    ("/openapi/sentinelstacks.json", "sentinelstacks"),
]
# What serves a path under none of those: OnMemOS (its `/`, `/info`, `/v1/workspaces`,
# `/v1/fs`, `/v1/storage`, `/v1/templates`, ...), as the load balancer's default backend does
# (terraform/main.tf). It answers a path it has no route for in the error shape of the
# surface whose prefix the path is under.
DEFAULT_TARGET = "onmemos"

log = logging.getLogger(__name__)


def _served(target: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """A target whose answer carries its request's `X-Request-Id`, the id that every line
    logged while answering carries too, and whose refusal is logged with it; answered in a
    server span (`tether.tracing`) continuing the caller's trace. The span names the target,
    never the path or the query, where a credential may be."""
    name = target.__name__

    @functools.wraps(target)
    def serve(request: Request) -> Response:
        from tether.surfaces.http import request_scope

        method = request.method
        attributes = {"http.request.method": method, "tether.target": name}
        with (
            tracing.span(f"{method} {name}", "server", attributes, request.headers),
            request_scope(request) as request_id,
        ):
            response = target(request)
            status = response.status_code
            tracing.annotate({"http.response.status_code": status, "tether.request_id": request_id})
            if status >= 500:
                tracing.failed(f"answered {status}")
            if status >= 400:
                log.log(_severity(status), "%s %s answered %d", method, request.path, status)
        response.headers.setdefault("X-Request-Id", request_id)
        return response

    return serve


def _severity(status: int) -> int:
    """A client's mistake is INFO; a refusal until later (503) a WARNING; a crash an ERROR."""
    if status == 500:
        return logging.ERROR
    return logging.WARNING if status >= 500 else logging.INFO


# Each target imports what it serves on its first call, not at import: a function instance
# loads only its own surface, and importing `functions/main.py` stays as cheap as importing
# functions_framework (tests/bench/test_cold_start_bench.py).


@_served
def onmemos(request: Request) -> Response:
    from tether.surfaces import onmemos

    return onmemos.router(request)


@_served
def streamspace(request: Request) -> Response:
    from tether.surfaces import streamspace

    return streamspace.handle(request)


@_served
def kubently(request: Request) -> Response:
    from tether.surfaces import kubently

    return kubently.handle(request)


@_served
def openctrol(request: Request) -> Response:
    from tether.surfaces import openctrol

    return openctrol.handle(request)


@_served
def sentinelstacks(request: Request) -> Response:
    from tether.surfaces import sentinelstacks

    return sentinelstacks.handle(request)


@_served
def health(request: Request) -> Response:
    from tether.surfaces import onmemos

    return onmemos.router(request)


@_served
def sweeper(request: Request) -> Response:
    from tether import bootstrap
    from tether.surfaces.http import json_response

    return json_response(bootstrap.services().sweeper.run())


def agent_events(event: Any) -> None:
    """Pub/Sub push of `agent-events`, and of the commands dead-lettered from
    `agent-commands`: raising makes Pub/Sub redeliver, which is safe."""
    from tether import bootstrap

    message = event.data["message"]
    data = json.loads(base64.b64decode(message.get("data", "")) or b"{}")
    bootstrap.services().events.handle(data, message.get("attributes") or {})


HTTP_TARGETS: dict[str, Callable[[Request], Response]] = {
    "onmemos": onmemos,
    "streamspace": streamspace,
    "kubently": kubently,
    "openctrol": openctrol,
    "sentinelstacks": sentinelstacks,
    "health": health,
    "sweeper": sweeper,
}


def target_for(path: str) -> str | None:
    best: tuple[int, str] | None = None
    for prefix, target in ROUTES:
        if (path == prefix or path.startswith(prefix + "/")) and (
            best is None or len(prefix) > best[0]
        ):
            best = (len(prefix), target)
    return best[1] if best else None
