"""HTTP server inside a workspace. Listens on a Unix socket handed in by the local agent, or on
a TCP port (Cloud Run, GKE)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from tether.core.layout import VNC_SOCKET
from tether.runtime import (
    activity,
    auth,
    exec_channel,
    exec_stream,
    files,
    ports,
    processes,
    websockets,
)
from tether.runtime.desktop import desktop
from tether.runtime.execute import could_not_start, exec_request, run_command_async
from tether.runtime.follow import follow
from tether.runtime.main_process import MainProcess
from tether.runtime.problems import problem
from tether.runtime.session_log import SESSION_LOG, LogWriter, tail
from tether.runtime.terminal import terminal
from tether.runtime.vnc import vnc

CHANNEL = web.AppKey("exec_channel", exec_channel.ExecChannel)


def make_app(
    home: str,
    main: str | None = None,
    exec_socket: str | socket.socket | exec_channel.ExecChannel | None = None,
    token: str | auth.Credential | None = None,
    max_bytes: int = files.MAX_BYTES,
) -> web.Application:
    """The runtime's API; with `main`, also the workspace's main process, started with the
    app and stopped (with its whole process group) when the app shuts down; with
    `exec_socket`, also the exec channel (`exec_channel`) on that Unix socket (or that
    channel, serving already), closed with the app; with `token`, every request must carry it
    (`tether.runtime.auth`) until `POST /adopt` gives another. `max_bytes` bounds an upload."""
    credential = token if isinstance(token, auth.Credential) else auth.Credential(token)
    # One record of the workspace's activity (`GET /activity`), shared with a channel that
    # serves already (its execs count too).
    doing = (
        exec_socket.activity
        if isinstance(exec_socket, exec_channel.ExecChannel)
        else activity.Activity()
    )

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # /health says only that it is up (and its pid): the kubelet's readiness probe of a
        # GKE workspace asks for it with no credential.
        if request.path != "/health" and not credential.accepts(request.headers.get(auth.HEADER)):
            return web.json_response({"detail": f"{auth.HEADER}: not this workspace's"}, status=401)
        return await handler(request)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def execute(request: web.Request) -> web.Response:
        try:
            command, timeout, cap = exec_request(await request.json())
        except ValueError as exc:  # JSONDecodeError included
            return web.json_response({"detail": str(exc)}, status=400)
        with doing.running_one("exec"):
            try:
                result = await run_command_async(command, home, timeout, cap=cap)
            except OSError as exc:
                return problem(503, "SPAWN_FAILED", could_not_start(exc))
        return web.json_response(result.as_dict())

    async def report(_: web.Request) -> web.Response:
        """Whether the workspace is busy and what it last did (`tether.runtime.activity`)."""
        return web.json_response(doing.report())

    async def logs(request: web.Request) -> web.Response:
        try:
            n = int(request.query.get("tail", "100"))
        except ValueError:
            return web.json_response({"detail": "tail: must be an integer"}, status=400)
        return web.json_response({"lines": tail(Path(home), n)})

    async def shutdown(_: web.Request) -> web.Response:
        # How the provisioner stops a workspace: a signal to bubblewrap would end the whole pid
        # namespace at once, giving the main process no chance to exit cleanly (a browser
        # saving its profile). This takes the same graceful path as SIGTERM.
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        return web.json_response({"status": "stopping"})

    adopted = False

    async def adopt(request: web.Request) -> web.Response:
        """A session takes this runtime (started ahead, for a warm pool): from now on only
        the session's token opens it, the one that opened this request no more. Once only:
        the session's token cannot hand the workspace on."""
        nonlocal adopted
        if adopted:
            return web.json_response({"detail": "adopted already"}, status=409)
        try:
            new = (await request.json())["token"]
            if not isinstance(new, str) or not new:
                raise ValueError(new)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"detail": "token: a non-empty string"}, status=400)
        credential.token, adopted = new, True
        return web.json_response({"status": "adopted"})

    async def pty(request: web.Request) -> web.WebSocketResponse:
        return await terminal(request, home, doing)

    async def follow_logs(request: web.Request) -> web.WebSocketResponse:
        return await follow(request, home)

    async def vnc_bridge(request: web.Request) -> web.StreamResponse:
        return await vnc(request, home, VNC_SOCKET)

    async def openctrol(request: web.Request) -> web.StreamResponse:
        return await desktop(request, home)

    app = web.Application(middlewares=[authenticate] if credential.token else [])
    app.router.add_get("/health", health)
    app.router.add_get("/pty", pty)
    app.router.add_get("/vnc", vnc_bridge)
    app.router.add_get("/openctrol", openctrol)
    app.router.add_get("/logs/follow", follow_logs)
    app.router.add_post("/shutdown", shutdown)
    if credential.token:  # a runtime with no token (Cloud Run's) is never pooled this way
        app.router.add_post("/adopt", adopt)
    app.router.add_post("/exec", execute)
    app.router.add_get("/logs", logs)
    app.router.add_get("/activity", report)
    exec_stream.setup(app, home, doing)
    processes.setup(app, home, doing)
    files.setup(app, home, max_bytes, doing)
    ports.setup(app, doing)
    websockets.close_on_shutdown(app)  # before the main process stops (on_shutdown, below)
    if exec_socket:
        where = exec_socket

        async def start_channel(app: web.Application) -> None:
            if isinstance(where, exec_channel.ExecChannel):
                app[CHANNEL] = where
            else:
                app[CHANNEL] = exec_channel.serve(where, home, credential, doing)

        async def stop_channel(app: web.Application) -> None:
            await asyncio.get_running_loop().run_in_executor(None, app[CHANNEL].close)

        app.on_startup.append(start_channel)
        app.on_cleanup.append(stop_channel)
    if main:
        writer = LogWriter(Path(home) / SESSION_LOG)
        process = MainProcess(main, home, writer)

        async def start_main(_: web.Application) -> None:
            await process.start()

        async def stop_main(_: web.Application) -> None:
            # on_shutdown runs first thing on SIGTERM, before open requests are waited for.
            await process.stop()
            writer.close()

        app.on_startup.append(start_main)
        app.on_shutdown.append(stop_main)
    return app


def run(
    args: argparse.Namespace,
    command: str | None,
    credential: auth.Credential,
    channel: exec_channel.ExecChannel | None,
) -> None:
    """Serves the app (`tether.runtime.boot` has set the process up, and may have the exec
    channel serving already)."""
    app = make_app(args.home, command, channel or args.exec_socket, credential)
    if args.socket_fd:
        listener = socket.socket(fileno=args.socket_fd)
        web.run_app(app, sock=listener, print=None, access_log=None)
    elif args.socket:
        web.run_app(app, path=args.socket, print=None, access_log=None)
    else:
        web.run_app(app, host="0.0.0.0", port=args.port, print=None, access_log=None)
