"""The real workspace runtime app (`tether.runtime.server.make_app`) on a loopback TCP port,
served from a thread with its own event loop: what a Cloud Run service's URL leads to."""

from __future__ import annotations

from pathlib import Path

from tether.runtime.server import make_app

from tests.fakes.loopback import LoopbackApp


class RuntimeServer:
    def __init__(self, home: Path, main: str | None = None) -> None:
        self.home = home
        self.main = main
        self._app = LoopbackApp("runtime")

    @property
    def url(self) -> str:
        return self._app.url

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        return self._app.start(lambda: make_app(str(self.home), self.main))

    def stop(self) -> None:
        self._app.stop()
