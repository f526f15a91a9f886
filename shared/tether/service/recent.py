"""What many requests read and few change (templates, the agents list), kept a moment in the
instance: a create reads neither on every call. A change made here is seen here at once; one
made by another instance, within `ttl`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

TTL = 2.0  # seconds
MOST = 1024  # values kept at once: names asked for that do not exist must not fill memory


class Recent(Generic[V]):
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._kept: dict[Hashable, tuple[float, V]] = {}
        self._forgotten = 0  # how many times `forget` ran: a load older than that is stale
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        now = time.monotonic()
        with self._lock:
            kept, forgotten = self._kept.get(key), self._forgotten
        if kept is not None and kept[0] > now:
            return kept[1]
        value = load()
        with self._lock:
            if self._forgotten == forgotten:  # nothing changed here while it was read
                if len(self._kept) >= MOST:
                    self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
                if len(self._kept) < MOST:
                    self._kept[key] = (now + self.ttl, value)
        return value

    def forget(self, key: Hashable | None = None) -> None:
        """Read afresh next time: `key`, or everything."""
        with self._lock:
            self._forgotten += 1
            if key is None:
                self._kept.clear()
            else:
                self._kept.pop(key, None)
