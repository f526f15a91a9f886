"""The agent's clients for a workspace's runtime treat it as the workspace's own code: an
answer that drips or never ends costs a call its timeout, no more, and a huge one is refused."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tether.provision.uds import MAX_ANSWER, UnixHTTPClient, UnixJsonClient


class _Hostile(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # a dripping answer is not waited for at the end


@contextlib.contextmanager
def hostile(path: Path, answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A runtime at `path` that answers each connection with `answer`. socketserver stops its
    accept loop before the socket closes: a loop left accepting on a closed descriptor's
    number would take the connections of whatever socket is given that number next."""

    class Answer(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            answer(self.request)

    where = os.open(path.parent, os.O_PATH)  # so a path of any length can be bound
    try:
        server = _Hostile(f"/proc/self/fd/{where}/{path.name}", Answer)
    finally:
        os.close(where)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield str(path)
    finally:
        server.shutdown()
        server.server_close()


def drip(head: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        try:
            conn.sendall(head)
            for _ in range(200):  # a byte every 0.2 s: each read alone is within any timeout
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            pass

    return answer


@pytest.fixture
def dripping_http(tmp_path: Path) -> Iterator[str]:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n"
    with hostile(tmp_path / "http", drip(head)) as path:
        yield path


@pytest.fixture
def dripping_exec(tmp_path: Path) -> Iterator[str]:
    with hostile(tmp_path / "exec", drip(b'{"stdout": "')) as path:
        yield path


def test_a_dripping_answer_costs_the_call_its_timeout(
    dripping_http: str, dripping_exec: str
) -> None:
    for call in (
        lambda: UnixHTTPClient(dripping_http).request("POST", "/shutdown", timeout=1),
        lambda: UnixJsonClient(dripping_exec).call({"command": "true"}, 1),
    ):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            call()
        assert time.monotonic() - started < 5  # not the 40 s the runtime would take


def test_an_answer_over_the_cap_is_refused(tmp_path: Path) -> None:
    body = b"[" + b"[]," * (MAX_ANSWER // 3) + b"[]]"

    def flood(http: bool) -> Callable[[socket.socket], None]:
        def answer(conn: socket.socket) -> None:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            with contextlib.suppress(OSError):
                conn.sendall((head if http else b"") + body + b"\n")

        return answer

    with (
        hostile(tmp_path / "http", flood(True)) as http_path,
        pytest.raises(http.client.HTTPException, match="over"),
    ):
        UnixHTTPClient(http_path).request("GET", "/logs", timeout=10)
    with (
        hostile(tmp_path / "exec", flood(False)) as exec_path,
        pytest.raises(ConnectionResetError),
    ):
        UnixJsonClient(exec_path).call({"command": "true"}, 10)


def test_a_link_planted_where_a_runtime_socket_should_be_is_not_followed(tmp_path: Path) -> None:
    """gVisor's runtime makes its sockets in a directory of the workspace's: a link there to
    another socket of the host must not lead the agent (root) to it."""
    deep = tmp_path / ("d" * 100)  # and a path past the 108 bytes of a socket address
    deep.mkdir()
    with (
        hostile(tmp_path / "elsewhere", drip(b"")) as elsewhere,
        hostile(deep / "runtime.sock", drip(b"HTTP/1.1 204 No Content\r\n\r\n")) as real,
    ):
        assert len(real) > 108
        assert UnixHTTPClient(real).request("GET", "/health", timeout=5) == (204, None)
        planted = deep / "runtime.exec"
        planted.symlink_to(elsewhere)
        with pytest.raises(OSError):  # ELOOP
            UnixJsonClient(str(planted)).call({"command": "true"}, 5)
