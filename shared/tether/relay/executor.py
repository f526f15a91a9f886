"""Kubently's executor stream, `GET /executor/stream`: Server-Sent Events carrying a cluster's
commands to its third-party executor, as Kubently's own executor reads them.

Events: `connected` first, then a `command` event a command (`{id, args, timeout,
correlation_id}`, the verb first), and a `keepalive` whenever `KEEPALIVE` seconds pass without
one (the executor sets no read timeout: it needs some bytes now and then). The token is checked
again at every keepalive, so a revoked one ends the stream; a stream also ends after
`LIFETIME`, and the executor reconnects at once. Lives in the relay: it is held open.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from tether import bootstrap, errors
from tether.relay import streams
from tether.relay.streams import blocking
from tether.surfaces.http import status_for
from tether.surfaces.shapes import kubently as render_error

PATH = "/executor/stream"
KEEPALIVE = 15.0
LIFETIME = 600.0
TAKEN_AT_ONCE = 10


def _refusal(error: errors.TetherError) -> web.Response:
    made = render_error(error, status_for(error))
    return web.Response(status=made.status_code, body=made.get_data(), content_type=made.mimetype)


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


async def executor_stream(request: web.Request) -> web.StreamResponse:
    services = bootstrap.services()

    def check() -> str:
        return services.clusters.executor(
            request.headers.get("Authorization"), request.headers.get("X-Cluster-ID")
        )

    try:
        cluster_id = await blocking(check)
    except errors.TetherError as exc:
        streams.audited(request, None, "relay.connect", "executor", "refused")
        return _refusal(exc)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })  # fmt: skip
    await response.prepare(request)
    streams.audited(request, f"executor:{cluster_id}", "relay.connect", cluster_id, "ok")
    await response.write(_event("connected", {"status": "connected", "cluster_id": cluster_id}))
    ends = time.monotonic() + LIFETIME
    try:
        while time.monotonic() < ends:
            handed = await blocking(services.executors.take, cluster_id, TAKEN_AT_ONCE, KEEPALIVE)
            for command in handed:
                await response.write(_event("command", {
                    "id": command.id, "args": command.args, "timeout": command.timeout,
                    "correlation_id": command.correlation_id,
                }))  # fmt: skip
            if not handed:
                await blocking(check)  # revoked: the stream ends
                await response.write(_event("keepalive", {"timestamp": time.time()}))
    except errors.TetherError:
        pass  # its token was revoked
    except ConnectionResetError:
        pass  # the executor left
    finally:
        streams.audited(request, f"executor:{cluster_id}", "relay.disconnect", cluster_id, "closed")
    return response
