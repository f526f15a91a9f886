"""A page of a list, and the opaque cursor that resumes the list after it."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from tether.core.ports import Position
from tether.errors import Invalid

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int  # how many match, on every page
    next_cursor: str | None  # resumes after this page; None once the list is done


def cursor(value: Any, doc_id: str) -> str:
    """The position after a document whose order field holds `value` (a time keeps its type)."""
    tagged = ["t", value.isoformat()] if isinstance(value, datetime) else ["v", value]
    return base64.urlsafe_b64encode(orjson.dumps([*tagged, doc_id])).decode().rstrip("=")


def position(token: str, field: str = "cursor") -> Position:
    """What `cursor` made; anything else is refused, naming `field`."""
    try:
        padded = token + "=" * (-len(token) % 4)
        kind, value, doc_id = orjson.loads(base64.urlsafe_b64decode(padded))
        if kind == "t":
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError(value)
        elif kind != "v" or not isinstance(value, str | int | float | None):
            raise ValueError(kind)
        if not isinstance(doc_id, str):
            raise ValueError(doc_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Invalid("Not a cursor this list gave out", field=field) from None
    return value, doc_id
