"""Streamed exec: a command's output as it comes, over Server-Sent Events (`POST /exec/stream`)
or a WebSocket (`GET /exec/ws`, which also takes stdin and signals). The command is killed
(its whole group) at its timeout (exit code 124) or when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from tether.runtime import websockets
from tether.runtime.activity import Activity
from tether.runtime.execute import could_not_start
from tether.runtime.live import SIGNALS, Chunk, Exit, LiveCommand, Output, Spec, parse_spec
from tether.runtime.problems import invalid, json_object, problem

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy on the way must not hold events back
}
GONE_POLL = 0.2  # seconds between looks at whether an SSE client is still there
STDIN_BACKLOG = 1 << 20  # bytes written to a command's stdin that it has not read yet
Send = Callable[[Chunk | Exit], Awaitable[None]]

RUNNING: web.AppKey[weakref.WeakSet[LiveCommand]] = web.AppKey("exec_streams")


def sse_sender(response: web.StreamResponse) -> Send:
    async def send(item: Chunk | Exit) -> None:
        kind, payload = item.event()
        await response.write(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())

    return send


def ws_sender(ws: web.WebSocketResponse) -> Send:
    async def send(item: Chunk | Exit) -> None:
        kind, payload = item.event()
        await ws.send_str(json.dumps({"type": kind, **payload}))

    return send


async def pump(output: Output, send: Send, live: bool = True) -> None:
    async for item in output.follow(live):
        await send(item)


async def _gone(request: web.Request) -> None:
    """Returns once the client has closed its connection. (aiohttp does not cancel a handler
    when its client leaves, and an SSE stream with nothing to send would not notice.)"""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(GONE_POLL)


async def stream_sse(
    request: web.Request, response: web.StreamResponse, output: Output, live: bool
) -> None:
    """Answers with `output` as events, until its end or until the client leaves."""
    await response.prepare(request)
    sending = asyncio.ensure_future(pump(output, sse_sender(response), live))
    gone = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait([sending, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        sending.cancel()
    if sending.done() and not sending.cancelled() and sending.exception() is None:
        with contextlib.suppress(ConnectionError):
            await response.write_eof()


def start_failed(spec: Spec, exc: OSError) -> web.Response:
    if isinstance(exc, FileNotFoundError | NotADirectoryError | PermissionError):
        return invalid(f"cwd: {exc.strerror or exc}: {spec.cwd}")
    return problem(503, "SPAWN_FAILED", could_not_start(exc))


async def exec_sse(request: web.Request, home: str, activity: Activity) -> web.StreamResponse:
    try:
        spec = parse_spec(await json_object(request), home, timeout=True)
    except ValueError as exc:
        return invalid(str(exc))
    try:
        command = await LiveCommand.start(spec, stdin=False, hold=True)
    except OSError as exc:
        return start_failed(spec, exc)
    request.app[RUNNING].add(command)
    command.counted(activity, "exec")
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        await stream_sse(request, response, command.output, live=True)
    finally:
        command.kill()  # the client left (or the runtime stops): so does the command
    return response


async def exec_ws(request: web.Request, home: str, activity: Activity) -> web.WebSocketResponse:
    ws = await websockets.accept(request, max_msg_size=4 << 20)
    first = await ws.receive()
    try:
        if first.type is not WSMsgType.TEXT:
            raise ValueError("first frame: must be a JSON text frame")
        body = json.loads(first.data)
        if not isinstance(body, dict):
            raise ValueError("first frame: must be a JSON object")
        spec = parse_spec(body, home, timeout=True)
    except ValueError as exc:
        return await _refuse(ws, str(exc))
    try:
        command = await LiveCommand.start(spec, stdin=True, hold=True)
    except OSError as exc:
        return await _refuse(ws, _detail(start_failed(spec, exc).text))
    request.app[RUNNING].add(command)
    command.counted(activity, "exec")
    sending = asyncio.ensure_future(pump(command.output, ws_sender(ws)))
    receiving = asyncio.ensure_future(_commands_from(ws, command))
    try:
        await asyncio.wait([sending, receiving], return_when=asyncio.FIRST_COMPLETED)
    finally:
        receiving.cancel()
        if not sending.done():  # the client left first
            command.kill()
            sending.cancel()
        command.kill()
        await ws.close()
    return ws


async def _refuse(ws: web.WebSocketResponse, detail: str) -> web.WebSocketResponse:
    if not ws.closed:
        await ws.send_str(json.dumps({"type": "error", "detail": detail}))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION)
    return ws


def _detail(text: str | None) -> str:
    """The detail of an error answer's JSON, or the text itself."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(text or "")["detail"])
    return text or ""


async def _commands_from(ws: web.WebSocketResponse, command: LiveCommand) -> None:
    """The client's frames: stdin, its end, signals. Returns when the client leaves."""
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            continue
        try:
            frame = json.loads(msg.data)
            kind = frame["type"]
            if kind == "stdin":
                if not isinstance(frame["data"], str):
                    raise ValueError("data: must be a string")
                command.write_stdin(frame["data"].encode())
                await command.stdin_drained()  # a command not reading: we stop reading too
            elif kind == "stdin_eof":
                command.write_stdin(b"", eof=True)
            elif kind == "signal":
                command.signal(SIGNALS[frame["signal"]])
            else:
                raise ValueError(f"type: unknown: {kind!r}"[:200])
        except (ValueError, KeyError, TypeError) as exc:
            text = str(exc) if isinstance(exc, ValueError) else f"bad frame: {exc!r}"[:200]
            await ws.send_str(json.dumps({"type": "error", "detail": text}))


def setup(app: web.Application, home: str, activity: Activity) -> None:
    app[RUNNING] = weakref.WeakSet[LiveCommand]()

    async def sse(request: web.Request) -> web.StreamResponse:
        return await exec_sse(request, home, activity)

    async def ws(request: web.Request) -> web.WebSocketResponse:
        return await exec_ws(request, home, activity)

    async def kill_all(app: web.Application) -> None:
        running: weakref.WeakSet[LiveCommand] = app[RUNNING]
        for command in list(running):
            command.kill()

    app.router.add_post("/exec/stream", sse)
    app.router.add_get("/exec/ws", ws)
    app.on_shutdown.append(kill_all)
