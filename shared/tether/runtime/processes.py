"""Background processes: commands that outlive the request that started them and end with the
runtime. Each keeps the last `live.KEEP` bytes of its output for readers that come later;
its pipes are read whether anyone reads them or not."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime

from aiohttp import web

from tether.runtime import websockets
from tether.runtime.activity import Activity
from tether.runtime.exec_stream import (
    SSE_HEADERS,
    STDIN_BACKLOG,
    pump,
    start_failed,
    stream_sse,
    ws_sender,
)
from tether.runtime.live import SIGNALS, LiveCommand, parse_spec
from tether.runtime.problems import invalid, json_object, problem

MAX_RUNNING = 64
KEEP_ENDED = 64


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def describe(process: LiveCommand) -> dict[str, object]:
    exit = process.output.exit
    return {
        "pid": process.pid,
        "command": process.spec.command,
        "cwd": process.spec.cwd,
        "status": "running" if process.running else "exited",
        "exit_code": exit.exit_code if exit else None,
        "started_at": _iso(process.started_at),
        "ended_at": _iso(process.ended_at),
    }


class Processes:
    """The runtime's background processes: those running, and the last `KEEP_ENDED` ended."""

    def __init__(self, home: str, activity: Activity) -> None:
        self.home, self.activity = home, activity
        self.running: dict[int, LiveCommand] = {}
        self.ended: OrderedDict[int, LiveCommand] = OrderedDict()
        self._stops: list[asyncio.Future[None]] = []

    def get(self, request: web.Request) -> LiveCommand | None:
        try:
            pid = int(request.match_info["pid"])
        except ValueError:
            return None
        return self.running.get(pid) or self.ended.get(pid)

    def _ended(self, process: LiveCommand) -> None:
        if self.running.get(process.pid) is process:
            del self.running[process.pid]
        self.ended[process.pid] = process
        self.ended.move_to_end(process.pid)
        while len(self.ended) > KEEP_ENDED:
            self.ended.popitem(last=False)

    async def start(self, request: web.Request) -> web.Response:
        try:
            spec = parse_spec(await json_object(request), self.home, timeout=False)
        except ValueError as exc:
            return invalid(str(exc))
        if len(self.running) >= MAX_RUNNING:
            return problem(429, "TOO_MANY_PROCESSES", f"processes: {MAX_RUNNING} running already")
        try:
            process = await LiveCommand.start(spec, stdin=True, end_group_on_exit=True)
        except OSError as exc:
            return start_failed(spec, exc)
        self.running[process.pid] = process
        process.counted(self.activity, "process")
        self.ended.pop(process.pid, None)  # a pid used again
        process.done_callback(lambda: self._ended(process))
        return web.json_response(describe(process), status=201)

    async def list(self, _: web.Request) -> web.Response:
        every = sorted([*self.running.values(), *self.ended.values()], key=lambda p: p.started)
        return web.json_response({"processes": [describe(p) for p in every]})

    async def one(self, request: web.Request) -> web.Response:
        process = self.get(request)
        if process is None:
            return _not_found(request)
        return web.json_response(describe(process))

    async def stdin(self, request: web.Request) -> web.Response:
        process = self.get(request)
        if process is None:
            return _not_found(request)
        try:
            body = await json_object(request)
            data, eof = body.get("data", ""), body.get("eof", False)
            if not isinstance(data, str):
                raise ValueError("data: must be a string")
            if not isinstance(eof, bool):
                raise ValueError("eof: must be true or false")
        except ValueError as exc:
            return invalid(str(exc))
        if not process.running:
            return problem(409, "PROCESS_ENDED", f"pid: {process.pid} has exited")
        if not process.stdin_open:
            return problem(409, "STDIN_CLOSED", "stdin: closed already (eof was sent)")
        if process.stdin_backlog() + len(data) > STDIN_BACKLOG:
            return problem(409, "STDIN_FULL", "stdin: the process is not reading what it has")
        process.write_stdin(data.encode(), eof=eof)
        return web.json_response(describe(process))

    async def kill(self, request: web.Request) -> web.Response:
        process = self.get(request)
        if process is None:
            return _not_found(request)
        try:
            name = (await json_object(request)).get("signal", "TERM")
            number = SIGNALS[name] if isinstance(name, str) else None
        except KeyError:
            number = None
        except ValueError as exc:
            return invalid(str(exc))
        if number is None:
            return invalid(f"signal: one of {', '.join(SIGNALS)}")
        if process.running:  # an ended one's group is not signalled: its id may be reused
            process.signal(number)
        return web.json_response(describe(process))

    async def output(self, request: web.Request) -> web.StreamResponse:
        process = self.get(request)
        if process is None:
            return _not_found(request)
        live = request.query.get("follow", "true").lower() not in ("false", "0", "no")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = await websockets.accept(request)
            sending = asyncio.ensure_future(pump(process.output, ws_sender(ws), live))
            closed = asyncio.ensure_future(ws.receive())  # the client's close (or any frame)
            try:
                await asyncio.wait([sending, closed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                sending.cancel()
                closed.cancel()
                await ws.close()
            return ws
        response = web.StreamResponse(headers=SSE_HEADERS)
        await stream_sse(request, response, process.output, live)
        return response

    async def stop_all(self, _: web.Application) -> None:
        """On shutdown: every group is sent SIGTERM now; the wait for their end (SIGKILL after
        the grace) runs beside the main process's own stop, and is awaited at cleanup."""
        self._stops = [asyncio.ensure_future(p.stop()) for p in list(self.running.values())]
        await asyncio.sleep(0)  # each has sent its SIGTERM

    async def stopped(self, _: web.Application) -> None:
        await asyncio.gather(*self._stops)


def _not_found(request: web.Request) -> web.Response:
    return problem(404, "PROCESS_NOT_FOUND", f"pid: no process {request.match_info['pid']!r}"[:200])


def setup(app: web.Application, home: str, activity: Activity) -> None:
    processes = Processes(home, activity)
    app.router.add_post("/processes", processes.start)
    app.router.add_get("/processes", processes.list)
    app.router.add_get("/processes/{pid}", processes.one)
    app.router.add_post("/processes/{pid}/stdin", processes.stdin)
    app.router.add_post("/processes/{pid}/kill", processes.kill)
    app.router.add_get("/processes/{pid}/output", processes.output)
    app.on_shutdown.append(processes.stop_all)
    app.on_cleanup.append(processes.stopped)
