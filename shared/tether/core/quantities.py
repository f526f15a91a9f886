"""Kubernetes resource quantities ("512Mi", "1G", "1500m", "2"), as templates write them."""

from __future__ import annotations

import re

from tether.errors import Invalid

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_SCALE = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


def quantity(value: str, field: str) -> float:
    """The number a quantity stands for; Invalid names `field` when it is not one."""
    found = _QUANTITY.match(value.strip())
    if not found:
        raise Invalid(f"{field}: {value!r} is not a quantity such as 512Mi or 500m", field=field)
    return float(found.group(1)) * _SCALE[found.group(2)]


def to_bytes(value: str, field: str) -> int:
    return int(quantity(value, field))


def to_cores(value: str, field: str) -> float:
    return quantity(value, field)
