"""The function targets, thin: parse, call a service, render. `functions/main.py` registers
them with functions-framework; the local origin calls them directly.

`ROUTES` is the one routing table: the local origin serves it, the cloud load balancer's URL
map is generated from the same list.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.surfaces import onmemos as _onmemos
from tether.surfaces import streamspace as _streamspace
from tether.surfaces.http import json_response

# (path prefix, target). Longest prefix wins.
ROUTES: list[tuple[str, str]] = [
    ("/v1/sessions", "onmemos"),
    ("/v1/cloudrun", "onmemos"),
    ("/health", "health"),
    ("/api/v1", "streamspace"),
]


def onmemos(request: Request) -> Response:
    return _onmemos.router(request)


def streamspace(request: Request) -> Response:
    return _streamspace.handle(request)


def health(request: Request) -> Response:
    return _onmemos.health(request)


def sweeper(request: Request) -> Response:
    return json_response(bootstrap.services().sweeper.run())


def agent_events(event: Any) -> None:
    """Pub/Sub push of `agent-events`: raising makes Pub/Sub redeliver, which is safe."""
    message = event.data["message"]
    data = json.loads(base64.b64decode(message.get("data", "")) or b"{}")
    bootstrap.services().events.handle(data)


HTTP_TARGETS: dict[str, Callable[[Request], Response]] = {
    "onmemos": onmemos,
    "streamspace": streamspace,
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
