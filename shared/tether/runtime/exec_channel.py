"""Exec as newline-delimited JSON on a Unix socket: the local agent's path for commands.

Each line in is an exec request (as for `POST /exec`), each line out its result, in order,
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

from tether.runtime.execute import exec_request, run_command

MAX_REQUEST = 1 << 24  # bytes in one request line


class _Connection(socketserver.StreamRequestHandler):
    server: ExecChannel

    def handle(self) -> None:
        try:
            while line := self.rfile.readline(MAX_REQUEST + 1):
                if not line.endswith(b"\n"):
                    return  # longer than MAX_REQUEST, or cut short by the caller leaving
                self.wfile.write(_answer(line, self.server.home) + b"\n")
        except ConnectionError:
            pass  # the caller went away


class ExecChannel(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # socketserver's default of 5 refuses (EAGAIN) the sixth exec of a burst that connects
    # before the accept loop catches up: a Unix socket's connect does not wait for room.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, home: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a runtime that died
        super().__init__(path, _Connection)
        self.home = home

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def serve(path: str, home: str) -> ExecChannel:
    """Listens on `path` from a thread of its own until `close()`."""
    channel = ExecChannel(path, home)
    threading.Thread(target=channel.serve_forever, name="exec-channel", daemon=True).start()
    return channel


def _answer(line: bytes, home: str) -> bytes:
    try:
        command, timeout, cap = exec_request(json.loads(line))
    except ValueError as exc:
        return json.dumps({"detail": str(exc)}).encode()
    return run_command(command, home, timeout, cap=cap).model_dump_json().encode()
