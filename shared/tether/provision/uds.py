"""A small keep-alive HTTP client over a Unix socket for the agent→runtime hop.

The standard library's http.client costs a fraction of a general-purpose client per request,
and this hop is on the path of every exec. The runtime lives in the workspace, so its answers
are the workspace's words: each is bounded (`MAX_ANSWER`) before it is parsed.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import threading
import time
from typing import Any

from tether import tracing
from tether.runtime import auth

# Bytes in one answer: an exec result is two streams of at most 256 KiB, JSON-escaped
# (a control character takes six bytes).
MAX_ANSWER = 4 << 20


class _Socket(socket.socket):
    """A Unix socket whose reads and writes share one deadline per call: a runtime that
    answers a byte at a time cannot stretch a call's timeout into hours. (Each wait is still
    bounded by the timeout itself, so a call ends within twice its timeout at worst; the
    socket's timeout is set once a call, not per read, which is on every exec's path.)"""

    deadline = 0.0

    def start(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.settimeout(timeout)

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the runtime did not answer in time")

    def recv_into(self, *args: Any) -> int:
        self._check()
        return super().recv_into(*args)

    def sendall(self, *args: Any) -> None:
        self._check()
        super().sendall(*args)


def connect_unix(sock: socket.socket, path: str) -> None:
    """Connects to the Unix socket at `path` without following a link there: a workspace may
    own the directory (gVisor's runtime makes its sockets itself) and plant one that leads
    to any socket of the host. Through the descriptor, the path may also be longer than the
    108 bytes a socket address holds."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ConnectionRefusedError(f"{path} is not a socket")
        sock.connect(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _connect(path: str, timeout: float) -> _Socket:
    sock = _Socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.start(timeout)
        connect_unix(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


class _Conn(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("runtime", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = _connect(self.path, self.timeout or 10.0)


class UnixHTTPClient:
    """JSON over HTTP/1.1 on a Unix socket, with a pool of idle connections (thread-safe)."""

    def __init__(self, path: str, token: str | None = None) -> None:
        self.path = path
        self.headers = {auth.HEADER: token} if token else {}
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def request(
        self, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> tuple[int, Any]:
        """Returns (status, decoded JSON body). Raises OSError or http.client.HTTPException
        when the runtime cannot be reached. A client span (`tether.tracing`) whose trace the
        request carries (`traceparent`)."""
        path = url.partition("?")[0]
        said = {"http.request.method": method, "url.path": path, "tether.runtime": "unix"}
        with tracing.span(f"runtime {method} {path}", "client", said):
            return self._request(method, url, body, timeout)

    def _request(
        self, method: str, url: str, body: dict[str, Any] | None, timeout: float
    ) -> tuple[int, Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else _Conn(self.path, timeout)
        conn.timeout = timeout
        if isinstance(conn.sock, _Socket):
            conn.sock.start(timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {**self.headers, **tracing.headers()}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                raise http.client.HTTPException(f"the runtime's answer is over {MAX_ANSWER} bytes")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._idle.append(conn)
        return response.status, json.loads(data) if data else None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class UnixJsonClient:
    """The exec channel's client: a JSON line out, a JSON line back, on pooled connections."""

    def __init__(self, path: str, token: str | None = None) -> None:
        self.path = path
        self.token = token
        self._idle: list[tuple[_Socket, Any]] = []
        self._lock = threading.Lock()

    def call(self, body: dict[str, Any], timeout: float) -> Any:
        """Raises OSError when the runtime cannot be reached or closes the connection. A
        client span (`tether.tracing`), naming the call but never its command."""
        what = "ping" if body.get("ping") is True else "exec"
        with tracing.span(f"runtime {what}", "client", {"tether.runtime": "exec_channel"}):
            return self._call(body, timeout)

    def _call(self, body: dict[str, Any], timeout: float) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            sock = _connect(self.path, timeout)
            conn = (sock, sock.makefile("rb"))
        sock, reader = conn
        try:
            sock.start(timeout)
            if self.token:
                body = {**body, auth.FIELD: self.token}
            sock.sendall(json.dumps(body).encode() + b"\n")
            line = reader.readline(MAX_ANSWER + 1)
            if not line.endswith(b"\n"):
                raise ConnectionResetError("the runtime closed the exec channel")
        except BaseException:
            reader.close()
            sock.close()
            raise
        with self._lock:
            self._idle.append(conn)
        return json.loads(line)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock, reader in idle:
            reader.close()
            sock.close()
