"""Fixed-window rate limits kept in the Store, so every process and instance shares them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from tether.core.ports import Store
from tether.errors import Conflict, NotFound

KIND = "rate_limits"


@dataclass(frozen=True)
class Quota:
    limit: int
    remaining: int
    reset: int  # unix time the window ends
    allowed: bool

    @property
    def retry_after(self) -> int:
        return max(1, self.reset - int(time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass
class RateLimits:
    store: Store
    window: int = 60

    def _current(self, key: str) -> tuple[str, int]:
        """The document counting `key` in the current window, and when the window ends."""
        start = int(time.time()) // self.window * self.window
        return f"{key}@{start}".replace("/", "_"), start + self.window

    def hit(self, key: str, limit: int) -> Quota:
        """Count one request for `key` in the current window."""
        doc_id, reset = self._current(key)
        count = self._increment(doc_id, datetime.fromtimestamp(reset, UTC))
        return Quota(limit, max(0, limit - count), reset, count <= limit)

    def count(self, key: str) -> int:
        """What `key` has counted in the current window, counting nothing."""
        doc = self.store.get(KIND, self._current(key)[0])
        return int(doc.data.get("count", 0)) if doc is not None else 0

    def _increment(self, doc_id: str, expires: datetime) -> int:
        for _ in range(20):
            doc = self.store.get(KIND, doc_id)
            try:
                if doc is None:
                    self.store.create(KIND, doc_id, {"count": 1, "expires_at": expires})
                    return 1
                count = int(doc.data["count"]) + 1
                self.store.update(KIND, doc_id, {**doc.data, "count": count}, doc.version)
                return count
            except (Conflict, NotFound):
                # Another request counted at the same moment, or the window just ended and
                # the sweeper took its count away: count again.
                continue
        return 1 << 30  # hopelessly contended: treat as over the limit
