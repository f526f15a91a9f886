"""A TCP proxy on loopback that the tests can cut: a backend (an emulator) becomes unreachable
for the code under test, then comes back, while the backend itself runs on for the others.

Cut, it drops every connection it holds and closes each new one at once (what a client sees
of a backend that went away); restored, it forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class FaultProxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.address = ""
        self.down = False
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def start(self) -> str:
        """Serves from a thread of its own; returns `host:port` to give the client."""
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            host, port = self._server.sockets[0].getsockname()[:2]
            self.address = f"{host}:{port}"
            started.set()
            self._loop.run_forever()
            left = asyncio.all_tasks(self._loop)  # the connections it held: ended, then closed
            for task in left:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self._loop.close()

        threading.Thread(target=run, name="fault-proxy", daemon=True).start()
        assert started.wait(10), "the proxy did not start"
        return self.address

    def cut(self) -> None:
        """The backend is gone: every connection is dropped, and every new one."""

        def drop() -> None:
            self.down = True
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(drop)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "down", False)

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self.down:  # cut while it connected upstream
            for w in (writer, up_writer):
                w.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            # Cancelled when the proxy stops: that ends the connection, no error to report.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
