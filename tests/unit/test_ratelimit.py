"""A rate limit's count at a window's end: the sweeper may delete the ending window's count
between a request's read and its write; the request is counted again, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.service.ratelimit import KIND, RateLimits
from tether.store.sqlite import SqliteStore


class SweptMidway(SqliteStore):
    """The store, with the sweeper's delete landing between the first read and write."""

    swept = False

    def update(self, kind: str, doc_id: str, data: dict[str, Any], expected_version: int) -> Any:
        if kind == KIND and not self.swept:
            self.swept = True
            self.delete(kind, doc_id)
        return super().update(kind, doc_id, data, expected_version)


def test_a_count_swept_away_mid_request_is_counted_again(tmp_path: Path) -> None:
    limits = RateLimits(SweptMidway(tmp_path / "t.db"))
    assert limits.hit("create:user:ann", 10).remaining == 9
    second = limits.hit("create:user:ann", 10)  # its count's document goes midway
    assert second.allowed and second.remaining == 9  # counted again, from a fresh count
    assert limits.hit("create:user:ann", 10).remaining == 8
