"""What the workspace is doing, for idle detection: `GET /activity`.

The control plane asks this before it hibernates a session for idleness: a workspace is busy
while an exec or a background process runs, and its last activity is the latest of what moved
through the runtime: terminal bytes either way (never pings), a port's request or frame, a file
transfer, an exec's or a process's start and end. An open connection that carries nothing (a
terminal at its prompt) is not activity. Noting one is a clock read and an attribute stored, so
it may be done per chunk; the exec channel notes from its own threads. (No aiohttp here: the
exec channel answers before the HTTP server's imports are done.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

Source = Literal["exec", "terminal", "files", "port", "process"]
Kind = Literal["exec", "process"]


class Activity:
    def __init__(self) -> None:
        self.last: tuple[float, Source] | None = None  # one store: readers see a whole pair
        self.running: dict[Kind, int] = {"exec": 0, "process": 0}
        self._lock = threading.Lock()

    def note(self, source: Source) -> None:
        self.last = (time.time(), source)

    def began(self, kind: Kind) -> None:
        with self._lock:
            self.running[kind] += 1
        self.note(kind)

    def ended(self, kind: Kind) -> None:
        with self._lock:
            self.running[kind] -= 1
        self.note(kind)

    @contextlib.contextmanager
    def running_one(self, kind: Kind) -> Iterator[None]:
        self.began(kind)
        try:
            yield
        finally:
            self.ended(kind)

    def report(self) -> dict[str, object]:
        with self._lock:
            execs, processes = self.running["exec"], self.running["process"]
        last = self.last
        when = None
        if last is not None:
            iso = datetime.fromtimestamp(last[0], UTC).isoformat(timespec="milliseconds")
            when = iso.replace("+00:00", "Z")
        return {
            "busy": execs > 0 or processes > 0,
            "running": {"execs": execs, "processes": processes},
            "last_activity_at": when,
            "last_activity_source": last[1] if last is not None else None,
        }
