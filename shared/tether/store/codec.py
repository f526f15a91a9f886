"""Value encoding shared by adapters that keep documents as JSON text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tether.errors import Invalid

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ZERO = timedelta(0)


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise Invalid("naive datetime in a stored document")
    # Always with microseconds ("+00:00" cut off), so every instant has the same width.
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def dumps(data: dict[str, Any]) -> str:
    """JSON text of a document, its top-level datetimes as `encode` writes them. orjson writes
    a UTC one with microseconds just so, ten times faster than Python: only the others (another
    offset, no microseconds, which orjson leaves out) are encoded first. Datetimes nested deeper
    are written by orjson as they are: no query compares them."""
    odd = {
        k: _instant(v)
        for k, v in data.items()
        if isinstance(v, datetime) and not (v.microsecond and v.utcoffset() == _ZERO)
    }
    return orjson.dumps({**data, **odd} if odd else data, option=orjson.OPT_UTC_Z).decode()


loads = orjson.loads


def encode(value: Any) -> Any:
    """Datetimes become fixed-width UTC ISO strings, so string order is time order."""
    if isinstance(value, datetime):
        return _instant(value)
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def check_field(name: str) -> str:
    if not _FIELD.match(name):
        raise Invalid(f"bad field name {name!r}", field=name)
    return name
