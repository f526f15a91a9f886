"""The real workspace runtime app (`tether.runtime.server.make_app`) on a loopback TCP port,
served from a thread with its own event loop: what a Cloud Run service's URL leads to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.runtime.server import make_app

from tests.fakes.loopback import LoopbackApp


class RuntimeServer:
    def __init__(self, home: Path, main: str | None = None, **options: Any) -> None:
        self.home = home
        self.main = main
        self.options = options  # make_app's other arguments (token, max_bytes)
        self._app = LoopbackApp("runtime")

    @property
    def url(self) -> str:
        return self._app.url

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        return self._app.start(lambda: make_app(str(self.home), self.main, **self.options))

    def stop(self) -> None:
        self._app.stop()
