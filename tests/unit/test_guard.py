"""The origin's guard, byte by byte: which bytes of a keep-alive connection it takes for the
head of a request (and bounds), and which it leaves to aiohttp as a body."""

from __future__ import annotations

import asyncio

from tether.origin.guard import Connections, Guard, Limits


class Transport(asyncio.Transport):
    """What the guard writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data


def test_a_body_sent_while_the_last_handler_finishes_deferred_work_is_not_a_head() -> None:
    asyncio.run(_a_body_sent_while_the_last_handler_finishes())


async def _a_body_sent_while_the_last_handler_finishes() -> None:
    """A handler answers, then runs deferred work; the client sends its next request at once.
    That request's body must pass as a body however its bytes fall around the moment the
    first handler ends (once watched as a head it was refused, 431)."""
    connections = Connections(Limits())
    inner, transport = Inner(), Transport()
    guard: Guard = connections.factory(lambda: inner)()
    guard.connection_made(transport)
    guard.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    first = connections.serving(transport)
    first.__enter__()
    first.answer_sent()  # the answer is out; deferred work still runs
    body = bytes(range(1, 256)) * 1000  # no blank line in it, far past 64 KiB
    guard.data_received(
        b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * len(body))
    )
    guard.data_received(body)
    first.__exit__(None, None, None)  # the deferred work is done: the first handler ends
    guard.data_received(body)  # before the second handler has started
    assert not transport.closed and transport.written == b""
    assert inner.received.endswith(body + body)
    guard.connection_lost(None)
