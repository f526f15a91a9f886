"""An agent's HTTP side. Reached by Pub/Sub push (the `cloud_run` agent, a Cloud Run
service with CPU always allocated, so its heartbeat thread runs), each command arrives as a
POST to `/`, and the response acks it (2xx) or asks for redelivery (5xx). A pulling agent
(`gke`) serves only `/health`, for the kubelet's probes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging

from aiohttp import web

from tether.agent.daemon import Agent
from tether.core.ports import Message

log = logging.getLogger(__name__)


def make_app(agent: Agent, push: bool = True) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        try:
            envelope = await request.json()
            message = envelope["message"]
            data = json.loads(base64.b64decode(message.get("data", "")))
            msg = Message(data, dict(message.get("attributes") or {}), str(message["messageId"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            # Acked: a malformed message would be malformed on every redelivery.
            log.error("dropping a malformed push: %s", exc)
            return web.json_response({"detail": f"malformed push: {exc}"}, status=200)
        try:
            await asyncio.get_running_loop().run_in_executor(None, agent.handle, msg)
        except Exception:
            log.exception("command %s failed; Pub/Sub will redeliver it", msg.message_id)
            return web.json_response({"detail": "failed; redeliver"}, status=503)
        return web.Response(status=204)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "agent_id": agent.agent_id})

    app = web.Application()
    app.router.add_get("/health", health)
    if push:
        app.router.add_post("/", receive)
    return app
