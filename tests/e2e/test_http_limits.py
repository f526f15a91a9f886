"""The limits every connection to the origin gets, each tried over a raw socket as an attacker
would, with a normal client served meanwhile."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from tether.origin.guard import Limits
from tether.origin.server import Origin

from tests.e2e.conftest import Server, serving, start_server

calls: list[str] = []  # what reached the app


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    calls.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"], "read": len(body)}).encode()]


@pytest.fixture
def origin() -> Iterator[tuple[str, int]]:
    calls.clear()
    with serving(Origin(app, Limits(total=64, per_client=8, keep_alive=3))) as url:
        yield url, int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("limits") / "home")
    yield srv
    srv.stop()


def answer_of(sock: socket.socket, timeout: float = 20) -> tuple[int, dict[str, Any], float]:
    """The status and JSON body of the answer on `sock` (read to its end), and when it ended."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), data[:200]  # 1.0 for what cannot be parsed
    return int(head.split(b" ")[1]), json.loads(body or b"{}"), time.monotonic()


def served(url: str) -> bool:
    """A normal client, on a connection of its own, is answered."""
    return httpx.get(f"{url}/v1/sessions/x", timeout=10).status_code == 200


def test_a_head_over_64_kib_is_a_431_and_others_are_served(origin: tuple[str, int]) -> None:
    url, port = origin
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\nX-Big: ")
        assert served(url)
        with pytest.raises(OSError):  # cut before the 64 MiB line is taken
            for _ in range(1024):
                sock.sendall(b"a" * (64 << 10))
        status, body, _ = answer_of(sock)
    assert status == 431 and "64 KiB" in body["detail"]
    assert calls == ["GET /v1/sessions/x 0"]


def test_more_than_100_headers_is_a_431(origin: tuple[str, int]) -> None:
    url, port = origin
    headers = "".join(f"X-H{i}: {i}\r\n" for i in range(101))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET /v1/sessions HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        status, body, _ = answer_of(sock)
    assert status == 431 and "100 headers" in body["detail"]
    # 100 are fine (httpx adds Host, Accept, Accept-Encoding, Connection and User-Agent).
    fine = {f"X-H{i}": str(i) for i in range(95)}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/v1/sessions/y", headers=fine).status_code == 200
        assert client.get("/v1/sessions/z").status_code == 200
    assert calls == ["GET /v1/sessions/y 0", "GET /v1/sessions/z 0"]


def test_a_slow_head_is_cut_within_15_seconds(origin: tuple[str, int]) -> None:
    url, port = origin
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        done = threading.Event()

        def drip() -> None:  # a byte a second: every read finds more, the head never ends
            with contextlib.suppress(OSError):
                for byte in b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 60:
                    if done.wait(1):
                        return
                    sock.send(bytes([byte]))

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        assert served(url)
        status, body, ended = answer_of(sock, timeout=30)
        done.set()
    assert status == 408 and "in time" in body["detail"]
    assert ended - started < 15
    assert not calls or calls == ["GET /v1/sessions/x 0"]


def test_a_body_over_32_mib_is_a_413_before_any_handler_runs(origin: tuple[str, int]) -> None:
    url, port = origin
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 41943040\r\n\r\n" + b"x" * 65536
        )
        status, body, _ = answer_of(sock)
    assert status == 413 and "too large" in body["detail"]
    # Chunked, so no length is declared: cut once it grows past the limit.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%b\r\n" % (1 << 20, b"y" * (1 << 20))
        with contextlib.suppress(OSError):  # cut once answered (a moment's rest is dropped)
            for _ in range(64):
                sock.sendall(chunk)
        status, body, _ = answer_of(sock)
    assert status == 413
    assert served(url)
    assert calls == ["GET /v1/sessions/x 0"]  # neither body reached the app


def test_one_client_cannot_take_every_connection(origin: tuple[str, int]) -> None:
    _, port = origin
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        for sock in held:  # each is accepted and kept: answered once, kept alive
            sock.sendall(b"GET /v1/sessions/held HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", port)) as ninth:
            status, body, _ = answer_of(ninth)
        assert status == 503 and "your address" in body["detail"]
        # Another address is served all the while.
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.connect(("127.0.0.1", port))
        with other:
            other.sendall(
                b"GET /v1/sessions/other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            status, body, _ = answer_of(other)
        assert status == 200 and body["path"] == "/v1/sessions/other"
    finally:
        for sock in held:
            sock.close()


def test_an_idle_connection_is_closed(origin: tuple[str, int]) -> None:
    _, port = origin
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(20)
        assert sock.recv(1) == b""  # closed by the server (keep_alive=3 s here), no answer


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"CONNECT example.com:22 HTTP/1.1", 405), (b"TRACE /v1/sessions HTTP/1.1", 405),
     (b"BREW /v1/sessions HTTP/1.1", 400)],
    ids=["connect", "trace", "unknown"],
)  # fmt: skip
def test_methods_nobody_serves_are_refused(
    origin: tuple[str, int], request_line: bytes, status: int
) -> None:
    url, port = origin
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_line + b"\r\nHost: example.com:22\r\n\r\n")
        got, body, _ = answer_of(sock)
    assert got == status and body["detail"]
    assert served(url)


def test_non_ascii_paths_are_decoded_and_answered(stack: Server) -> None:
    headers = {"X-API-Key": stack.key}
    answer = httpx.get(f"{stack.url}/v1/sessions/%E2%82%AC", headers=headers, timeout=10)
    assert answer.status_code == 404 and "detail" in answer.json()
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:  # raw UTF-8, not %-encoded
        sock.sendall(
            "GET /v1/sessions/€ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
            + f"X-API-Key: {stack.key}\r\n\r\n".encode()
        )
        status, body, _ = answer_of(sock)
    assert status in (400, 404) and body["detail"]
