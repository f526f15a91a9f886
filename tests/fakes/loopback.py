"""An aiohttp application on a free loopback port, served from a thread with its own event loop:
how the fakes that speak a protocol at the wire (a workspace runtime, model APIs) run beside
a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


class LoopbackApp:
    def __init__(self, name: str) -> None:
        self.name = name
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(
        self,
        make_app: Callable[[], web.Application],
        host: str = "127.0.0.1",
        port: int = 0,
        **runner: Any,
    ) -> str:
        """Serve what `make_app` makes (called on the serving loop) at `host`:`port` (0: a
        free one); returns the base URL."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app_runner = web.AppRunner(make_app(), access_log=None, **runner)
            try:
                loop.run_until_complete(app_runner.setup())
                site = web.TCPSite(app_runner, host, port)
                loop.run_until_complete(site.start())
                bound, at = app_runner.addresses[0][:2]
                self.url = f"http://{bound}:{at}"
            except BaseException as exc:
                failed.append(exc)
                ready.set()
                raise
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(app_runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failed:
            raise RuntimeError(f"{self.name} did not start: {failed}")
        return self.url

    def stop(self, first: Callable[[], None] | None = None, grace: float = 0.0) -> None:
        """Stop serving; `first` runs on the loop before it stops, `grace` seconds before."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return

        def halt() -> None:
            if first is not None:
                first()
            loop.call_later(grace, loop.stop)

        loop.call_soon_threadsafe(halt)
        thread.join(10)
        self.loop = self._thread = None
