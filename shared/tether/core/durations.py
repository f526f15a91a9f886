"""Durations written the way the APIs write them: "90s", "30m", "2h", "1d"."""

from __future__ import annotations

import re
from datetime import timedelta

from tether.errors import Invalid

DURATION = r"^[1-9][0-9]{0,5}[smhd]$"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, field: str = "duration") -> timedelta:
    if not re.match(DURATION, text):
        raise Invalid(f"'{text}' is not a duration like 30m, 2h or 90s", field=field)
    return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
