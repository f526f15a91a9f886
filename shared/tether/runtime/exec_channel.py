"""Exec as newline-delimited JSON on a Unix socket: the local agent's path for commands.

Each line in is an exec request (as for `POST /exec`, plus the runtime's `token` when it has
one) or `{"ping": true}` (answered `{"status": "ok"}`), each line out its answer, in order,
one connection per concurrent caller, each served on its own thread. It skips HTTP parsing on
both ends, which is a good part of the hop's cost for a short command. Errors come back as
`{"detail": "..."}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading

from tether.runtime import auth
from tether.runtime.activity import Activity
from tether.runtime.execute import could_not_start, exec_request, run_command

MAX_REQUEST = 1 << 24  # bytes in one request line


class _Connection(socketserver.StreamRequestHandler):
    server: ExecChannel

    def handle(self) -> None:
        server = self.server
        try:
            while line := self.rfile.readline(MAX_REQUEST + 1):
                if not line.endswith(b"\n"):
                    return  # longer than MAX_REQUEST, or cut short by the caller leaving
                answer = _answer(line, server.home, server.credential, server.activity)
                self.wfile.write(answer + b"\n")
        except ConnectionError:
            pass  # the caller went away


class ExecChannel(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # socketserver's default of 5 refuses (EAGAIN) the sixth exec of a burst that connects
    # before the accept loop catches up: a Unix socket's connect does not wait for room.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        where: str | socket.socket,
        home: str,
        credential: auth.Credential | None = None,
        activity: Activity | None = None,
    ) -> None:
        """Listens at the path `where`, or on `where` itself: a socket already listening (the
        local agent makes it, outside the sandbox, and hands it in)."""
        if isinstance(where, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)  # left by a runtime that died
            super().__init__(where, _Connection)
        else:
            super().__init__(where.getsockname(), _Connection, bind_and_activate=False)
            self.socket.close()
            self.socket = where
        self.home = home
        self.credential = credential or auth.Credential()
        self.activity = activity or Activity()  # its execs are the workspace's activity

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def serve(
    where: str | socket.socket,
    home: str,
    credential: auth.Credential | None = None,
    activity: Activity | None = None,
) -> ExecChannel:
    """Serves from a thread of its own until `close()`."""
    channel = ExecChannel(where, home, credential, activity)
    threading.Thread(target=channel.serve_forever, name="exec-channel", daemon=True).start()
    return channel


def _answer(line: bytes, home: str, credential: auth.Credential, activity: Activity) -> bytes:
    try:
        body = json.loads(line)
        if not credential.accepts(body.get(auth.FIELD) if isinstance(body, dict) else None):
            return json.dumps({"detail": "token: not this workspace's"}).encode()
        if body.get("ping") is True:  # the agent asks whether the runtime is up
            return b'{"status": "ok"}'
        command, timeout, cap = exec_request(body)
    except ValueError as exc:
        return json.dumps({"detail": str(exc)}).encode()
    with activity.running_one("exec"):
        try:
            outcome = run_command(command, home, timeout, cap=cap)
        except OSError as exc:  # no fork (a process limit met), no home: said, not dropped
            return json.dumps({"detail": could_not_start(exc)}).encode()
    return json.dumps(outcome.as_dict()).encode()
