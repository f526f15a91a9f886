"""Error bodies as tests compare them: every surface's error carries its request's id."""

from __future__ import annotations

from typing import Any


def sans_id(body: Any) -> Any:
    """`body` without its `request_id`, which must be there (the id its log lines carry)."""
    assert isinstance(body, dict) and isinstance(body.get("request_id"), str), body
    return {k: v for k, v in body.items() if k != "request_id"}
