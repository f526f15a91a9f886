"""The real workspace runtime app (`tether.runtime.server.make_app`) on a loopback TCP port,
served from a thread with its own event loop: what a Cloud Run service's URL leads to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.runtime.server import make_app

from tests.fakes.loopback import LoopbackApp


class RuntimeServer:
    def __init__(
        self, home: Path, main: str | None = None, host: str = "127.0.0.1", port: int = 0,
        **options: Any,
    ) -> None:  # fmt: skip
        self.home = home
        self.main = main
        self.address = (host, port)  # where it listens (port 0: a free one)
        self.options = options  # make_app's other arguments (token, max_bytes)
        self._app = LoopbackApp("runtime")

    @property
    def url(self) -> str:
        return self._app.url

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        make = lambda: make_app(str(self.home), self.main, **self.options)  # noqa: E731
        return self._app.start(make, *self.address)

    def stop(self) -> None:
        self._app.stop()
