"""The function targets, thin: parse, call a service, render. `functions/main.py` exports them.

`ROUTES` is the one routing table: the local origin serves it, the cloud load balancer's URL
map is generated from the same list.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import functions_framework
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.surfaces import onmemos as _onmemos
from tether.surfaces.http import json_response

# (path prefix, target). Longest prefix wins.
ROUTES: list[tuple[str, str]] = [
    ("/v1/sessions", "onmemos"),
    ("/v1/cloudrun", "onmemos"),
    ("/health", "health"),
]


@functions_framework.http
def onmemos(request: Request) -> Response:
    return _onmemos.router(request)


@functions_framework.http
def health(request: Request) -> Response:
    return _onmemos.health(request)


@functions_framework.http
def sweeper(request: Request) -> Response:
    return json_response(bootstrap.services().sweeper.run())


@functions_framework.cloud_event
def agent_events(event: Any) -> None:
    """Pub/Sub push of `agent-events`: raising makes Pub/Sub redeliver, which is safe."""
    message = event.data["message"]
    data = json.loads(base64.b64decode(message.get("data", "")) or b"{}")
    bootstrap.services().events.handle(data)


HTTP_TARGETS = {"onmemos": onmemos, "health": health, "sweeper": sweeper}


def target_for(path: str) -> str | None:
    best: tuple[int, str] | None = None
    for prefix, target in ROUTES:
        if (path == prefix or path.startswith(prefix + "/")) and (
            best is None or len(prefix) > best[0]
        ):
            best = (len(prefix), target)
    return best[1] if best else None
