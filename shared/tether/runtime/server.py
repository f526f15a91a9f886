"""HTTP server inside a workspace. Listens on a Unix socket (local) or a TCP port (Cloud Run)."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from tether.runtime.execute import MAX_OUTPUT, run_command


def make_app(home: str) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def execute(request: web.Request) -> web.Response:
        body = await request.json()
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return web.json_response({"detail": "command: required"}, status=400)
        timeout = float(body.get("timeout", 120))
        cap = int(body.get("max_output", MAX_OUTPUT))
        result = await run_command(command, home, timeout, cap=cap)
        return web.json_response(result.model_dump())

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/exec", execute)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Tether workspace runtime")
    parser.add_argument("--home", default=os.environ.get("HOME", "/"))
    parser.add_argument("--socket", help="Unix socket path to listen on")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    app = make_app(args.home)
    if args.socket:
        web.run_app(app, path=args.socket, print=None, access_log=None)
    else:
        web.run_app(app, host="0.0.0.0", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
