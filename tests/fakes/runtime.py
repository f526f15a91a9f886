"""The real workspace runtime app (`tether.runtime.server.make_app`) on a loopback TCP port,
served from a thread with its own event loop: what a Cloud Run service's URL leads to."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web
from tether.runtime.server import make_app


class RuntimeServer:
    def __init__(self, home: Path, main: str | None = None) -> None:
        self.home = home
        self.main = main
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(make_app(str(self.home), self.main), access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                host, port = runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
            except BaseException as exc:
                failed.append(exc)
                ready.set()
                raise
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-runtime", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failed:
            raise RuntimeError(f"runtime did not start: {failed}")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None
