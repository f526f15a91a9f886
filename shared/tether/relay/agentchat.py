"""SentinelStacks' WebSockets: `/v1/agents/{id}/chat` and `/v1/agents/{id}/events`.

Chat speaks the reference's protocol (docs/specs/sentinelstacks-api.md): a welcome, then for
each `message` a `thinking` event, a `processing` event per model call, and
`stream_start`/`stream_chunk`/`stream_end` (or one `response` when the message says
`"stream": false`), `event`s and `tool_result`s for the tools the model uses, `error`s;
`tool_request` runs one tool and answers `tool_result`.
Message and request ids are echoed. It also speaks the repository's own chat socket
(internal/api/websocket.go): a frame `{role, content, timestamp}` is a message, echoed, and
answered by one `response` frame that carries `role`, `content` and `timestamp` too.

Turns run one at a time per connection, each in a thread (the model's client and the store
are blocking); their frames go out through a small queue, so a slow reader slows the turn
instead of growing memory. Everything is checked before the upgrade: the credential, the
Origin (the page's own, or one TETHER_CORS_ORIGINS lists), and that the agent is the
caller's. The conversation is kept in the store: a reconnect continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web

from tether import bootstrap, errors
from tether.core.aiagents import STATUS, AgentEvent, AiAgent
from tether.core.llm import ToolCall
from tether.core.models import Principal, utcnow
from tether.relay import access, streams
from tether.relay.streams import blocking
from tether.runtime.websockets import SESSION_ENDED
from tether.surfaces.http import iso, status_for

CHAT = "/v1/agents/{agent_id}/chat"
EVENTS = "/v1/agents/{agent_id}/events"
MAX_MESSAGE = 64 * 1024  # bytes of one client frame; a larger one closes the socket (1009)
PENDING = 8  # messages waiting for their turn; more are refused with an error frame
FRAMES = 64  # frames of a turn waiting to be sent before the turn waits for the reader
POLL = 1.0  # seconds between looks at an agent's new events
WS_OPTIONS: dict[str, Any] = {"heartbeat": 30, "compress": False, "max_msg_size": MAX_MESSAGE}


def _now() -> str:
    return iso(utcnow()) or ""


def refusal(error: errors.TetherError, status: int) -> web.Response:
    """A refused upgrade in SentinelStacks' error shape."""
    return web.json_response({"error": error.message}, status=status)


def allowed_origin(origin: str | None, host: str | None) -> bool:
    """The page's own origin, a program's (none), or one the operator lists."""
    if access.same_origin(origin, host):
        return True
    listed = bootstrap.services().settings.cors_origins
    return "*" in listed or (origin or "").rstrip("/") in listed


async def admit(request: web.Request, ws: web.WebSocketResponse) -> Principal | web.Response:
    """The caller, or the answer that refuses the upgrade."""
    if not streams.upgrading(request) or not ws.can_prepare(request).ok:
        return refusal(errors.Invalid("This path is a WebSocket: ask for an upgrade"), 400)
    if not allowed_origin(request.headers.get("Origin"), request.host):
        return refusal(errors.Forbidden("Cross-origin WebSocket refused"), 403)
    try:
        return await blocking(
            access.principal, "", request.query,
            request.headers.get("Authorization"), request.headers.get("X-API-Key"),
        )  # fmt: skip
    except errors.TetherError as exc:
        return refusal(exc, status_for(exc))


# -- chat -------------------------------------------------------------------------------------


class Turn:
    """One turn's frames, made on the turn's thread and queued for the connection's sender.
    It blocks while the queue is full (a slow reader), and gives up once the client is gone."""

    def __init__(self, out: Outbox, message_id: str, streaming: bool) -> None:
        self.out, self.message_id, self.streaming = out, message_id, streaming
        self.started = False

    def send(self, frame: dict[str, Any]) -> None:
        self.out.put_from_thread({**frame, "message_id": self.message_id})

    def thinking(self) -> None:
        self.send({"type": "event", "event_type": "thinking", "content": "Thinking...",
                   "timestamp": _now()})  # fmt: skip

    def processing(self, model: str) -> None:
        self.send({"type": "event", "event_type": "processing", "timestamp": _now(),
                   "content": f"Calling model {model}", "data": {"model": model}})  # fmt: skip

    def text(self, delta: str) -> None:
        if not self.streaming:
            return
        if not self.started:
            self.started = True
            self.send({"type": "stream_start", "timestamp": _now()})
        self.send({"type": "stream_chunk", "content": delta})

    def tool_use(self, call: ToolCall) -> None:
        self.send({"type": "event", "event_type": "tool_use", "content": f"Using tool {call.name}",
                   "timestamp": _now(), "data": {"tool": call.name, "call_id": call.id,
                                                 "parameters": call.arguments}})  # fmt: skip

    def tool_result(self, call: ToolCall, result: Mapping[str, Any]) -> None:
        self.send({"type": "tool_result", "tool": call.name, "call_id": call.id,
                   "success": bool(result.get("success")), "result": dict(result)})  # fmt: skip

    def finish(self, content: str, usage: dict[str, int]) -> None:
        answer = {"role": "assistant", "content": content, "timestamp": _now(), "usage": usage}
        if self.streaming:
            if not self.started:
                self.send({"type": "stream_start", "timestamp": _now()})
            self.send({"type": "stream_end", **answer})
        else:
            self.send({"type": "response", **answer})


class Gone(Exception):
    """The client left: the turn stops where it is."""


class Outbox:
    """Frames for one connection, sent in order by one task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FRAMES)
        self.closed = False

    def put_from_thread(self, frame: dict[str, Any]) -> None:
        while not self.closed:
            future = asyncio.run_coroutine_threadsafe(self.queue.put(frame), self.loop)
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                future.cancel()  # full: look again whether the client is still there
        raise Gone()

    async def put(self, frame: dict[str, Any]) -> None:
        await self.queue.put(frame)

    async def send_all(self) -> None:
        try:
            while True:
                await self.ws.send_json(await self.queue.get())
        except (ConnectionError, RuntimeError):  # the client left mid-send
            pass
        finally:
            self.closed = True


def _parse(raw: str) -> dict[str, Any]:
    """A client frame: `message`, `tool_request`, or the repository's `{role, content}`."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise errors.Invalid("A frame must be a JSON object") from None
    if not isinstance(data, dict):
        raise errors.Invalid("A frame must be a JSON object")
    kind = data.get("type")
    if kind is None and "content" in data:  # the repository's own chat frame
        data = {**data, "type": "message", "stream": False, "echo": True}
        kind = "message"
    if kind == "message":
        content = data.get("content")
        if not isinstance(content, str) or not content.strip():
            raise errors.Invalid("A message needs its text in `content`", field="content")
    elif kind == "tool_request":
        if not isinstance(data.get("tool"), str):
            raise errors.Invalid("A tool_request names its `tool`", field="tool")
        if not isinstance(data.get("parameters", {}), dict):
            raise errors.Invalid("`parameters` must be an object", field="parameters")
    else:
        raise errors.Invalid("Unknown frame type: expected message or tool_request", field="type")
    for name in ("message_id", "request_id"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 128):
            raise errors.Invalid(f"`{name}` must be text of at most 128 characters", field=name)
    return data


async def chat(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(**WS_OPTIONS)
    agent_id = request.match_info["agent_id"]
    who = await admit(request, ws)
    if isinstance(who, web.Response):
        return streams.refused(request, None, agent_id, who)
    services = bootstrap.services()
    wanted = request.query.get("conversation") or request.query.get("conversation_id")
    try:
        agent = await blocking(services.chats.ready, who, agent_id)
        conversation = await blocking(services.aiagents.conversation, agent, wanted)
    except errors.TetherError as exc:
        return streams.refused(request, who, agent_id, refusal(exc, status_for(exc)))
    await ws.prepare(request)
    streams.audited(request, who, "relay.connect", agent_id, "ok")
    out = Outbox(ws)
    turns: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PENDING)
    tasks = [
        asyncio.ensure_future(out.send_all()),
        asyncio.ensure_future(_serve_turns(turns, out, who, agent, conversation.id)),
        asyncio.ensure_future(_close_when_it_must(ws, who, agent.id)),
    ]
    await out.put({
        "type": "welcome", "role": "system", "timestamp": _now(), "agent_id": agent.id,
        "conversation_id": conversation.id,
        "content": f"Connected to {agent.name}. Send a message to start chatting.",
    })  # fmt: skip
    try:
        await _read(ws, out, turns)
    finally:
        out.closed = True
        for task in tasks:
            task.cancel()
        closed = ws.close_code if ws.close_code is not None else "closed"
        streams.audited(request, who, "relay.disconnect", agent_id, closed)
    return ws


async def _close_when_it_must(ws: web.WebSocketResponse, who: Principal, agent_id: str) -> None:
    """The agent's session ending closes its chat (4001), the caller's access ending too
    (4401)."""
    reason = await streams.until_it_must_end(who, agent_id, "api")
    code = access.ACCESS_REVOKED if reason == "revoked" else SESSION_ENDED
    await ws.close(code=code, message=reason.encode())


async def _read(
    ws: web.WebSocketResponse, out: Outbox, turns: asyncio.Queue[dict[str, Any]]
) -> None:
    """Take the client's frames until it leaves."""
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            await out.put({"type": "error", "error": "Frames must be JSON text",
                           "content": "Frames must be JSON text"})  # fmt: skip
            continue
        try:
            frame = _parse(msg.data)
        except errors.Invalid as exc:
            await out.put({"type": "error", "error": exc.message, "content": exc.message})
            continue
        if turns.full():
            busy = "Too many messages waiting; wait for the answers"
            await out.put({"type": "error", "error": busy, "content": busy,
                           "message_id": frame.get("message_id")})  # fmt: skip
            continue
        await turns.put(frame)


async def _serve_turns(
    turns: asyncio.Queue[dict[str, Any]],
    out: Outbox,
    who: Principal,
    agent: AiAgent,
    conversation_id: str,
) -> None:
    while True:
        frame = await turns.get()
        await blocking(_one_turn, out, who, agent, conversation_id, frame)


def _one_turn(
    out: Outbox, who: Principal, agent: AiAgent, conversation_id: str, frame: dict[str, Any]
) -> None:
    """Runs on a thread: one message's turn, or one tool request."""
    chats = bootstrap.services().chats
    if frame["type"] == "tool_request":
        request_id = frame.get("request_id") or f"req-{secrets.token_hex(6)}"
        try:
            current = chats.ready(who, agent.id)
            result = chats.run_tool(who, current, frame["tool"], frame.get("parameters") or {})
        except errors.TetherError as exc:
            result = {"success": False, "error": exc.message}
        with contextlib.suppress(Gone):
            out.put_from_thread({"type": "tool_result", "request_id": request_id,
                                 "tool": frame["tool"], "success": bool(result.get("success")),
                                 "result": result})  # fmt: skip
        return
    message_id = frame.get("message_id") or f"msg-{secrets.token_hex(6)}"
    turn = Turn(out, message_id, streaming=frame.get("stream", True) is not False)
    try:
        if frame.get("echo"):
            turn.send({"role": "user", "content": frame["content"], "timestamp": _now()})
        done = chats.turn(who, agent.id, frame["content"], turn, conversation_id)
        turn.finish(done.message.content, {"requests": done.requests, "tokens": done.tokens})
    except Gone:
        return
    except errors.TetherError as exc:
        with contextlib.suppress(Gone):
            turn.send({"type": "error", "error": exc.message, "content": exc.message})


# -- events -----------------------------------------------------------------------------------


def event_frame(event: AgentEvent, agent: AiAgent, status: str, memory: str | None) -> str:
    data = dict(event.data)
    if event.event_type == "usage":
        data = {"agent_id": agent.id, "status": status, "memory": memory,
                "api_usage": {"requests": data.get("requests", 0),
                              "tokens": data.get("tokens", 0)}}  # fmt: skip
    return json.dumps({"type": "event", "event_type": event.event_type,
                       "timestamp": iso(event.timestamp), "content": event.content,
                       "data": data})  # fmt: skip


def status_frame(agent: AiAgent, status: str, memory: str | None) -> str:
    return json.dumps({
        "type": "event", "event_type": "agent_status", "timestamp": _now(),
        "content": f"Agent {agent.name} is {status}",
        "data": {"agent_id": agent.id, "status": status, "memory": memory,
                 "api_usage": {"requests": agent.requests, "tokens": agent.tokens}},
    })  # fmt: skip


def _look(who: Principal, agent_id: str, after: Any) -> tuple[AiAgent, str, str | None, list[Any]]:
    """The agent now, its status and memory, and its events after `after`."""
    services = bootstrap.services()
    services.auth.current(who)  # a revoked credential ends the stream (Unauthenticated)
    agent, session = services.aiagents.get(who, agent_id)
    status = STATUS[session.state] if session is not None else "stopped"
    memory = session.resources.get("memory") if session is not None else None
    return agent, status, memory, services.aiagents.events_after(agent_id, after)


async def events(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(**WS_OPTIONS)
    agent_id = request.match_info["agent_id"]
    who = await admit(request, ws)
    if isinstance(who, web.Response):
        return streams.refused(request, None, agent_id, who)
    after: Any = utcnow()  # events from now on
    try:
        agent, status, memory, _ = await blocking(_look, who, agent_id, after)
    except errors.TetherError as exc:
        return streams.refused(request, who, agent_id, refusal(exc, status_for(exc)))
    await ws.prepare(request)
    streams.audited(request, who, "relay.connect", agent_id, "ok")
    closed = asyncio.ensure_future(_drain(ws))
    try:
        hello = {"message": "Connected to event stream", "agentId": agent_id}
        await ws.send_json({"type": "connected", "timestamp": _now(), "data": hello})
        await ws.send_str(status_frame(agent, status, memory))
        while not closed.done():
            await asyncio.wait([closed], timeout=POLL)
            try:
                agent, now, memory, new = await blocking(_look, who, agent_id, after)
            except errors.Unauthenticated:
                await ws.close(code=access.ACCESS_REVOKED, message=b"access revoked")
                break
            except errors.NotFound:
                await ws.close(code=SESSION_ENDED, message=b"agent deleted")
                break
            except errors.TetherError:
                continue  # the store away a moment: look again
            for event in new:
                await ws.send_str(event_frame(event, agent, now, memory))
                after = bootstrap.services().aiagents.position_of(event)
            if now != status:
                status = now
                await ws.send_str(status_frame(agent, status, memory))
    except ConnectionError:
        pass
    finally:
        closed.cancel()
        code = ws.close_code if ws.close_code is not None else "closed"
        streams.audited(request, who, "relay.disconnect", agent_id, code)
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


def add_routes(app: web.Application, otherwise: streams.Handler) -> None:
    """The two WebSockets; a plain request to their paths is the surface's (a 400)."""
    for path, handler in ((CHAT, chat), (EVENTS, events)):

        async def route(
            request: web.Request, handler: streams.Handler = handler
        ) -> web.StreamResponse:
            return await (handler if streams.upgrading(request) else otherwise)(request)

        app.router.add_get(path, route)
