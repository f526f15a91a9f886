"""The Firestore composite indexes Tether's queries need: the one list Terraform declares.

Firestore answers a query from its automatic single-field indexes when the query filters by
equality only (on any number of fields), or filters and orders on a single field. Anything
else needs a composite index, and the Firestore emulator never asks for one, so the Firestore
adapter checks every query against this list: a query run in the tests without its index
fails there, as it would in the cloud.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tether.core.ports import Filter

ASCENDING, DESCENDING = "ASCENDING", "DESCENDING"
_EQUALITY = ("==", "in")


@dataclass(frozen=True)
class Index:
    collection: str  # the kind, without any adapter prefix
    fields: tuple[tuple[str, str], ...]  # (field path, ASCENDING | DESCENDING), in order


COMPOSITE_INDEXES: tuple[Index, ...] = (
    Index("users", (("role", ASCENDING), ("username", ASCENDING))),  # Users.page
    # Sessions.expire: live ones whose TTL has passed.
    Index("sessions", (("state", ASCENDING), ("expires_at", ASCENDING))),
)


def required(
    kind: str, where: Sequence[Filter], order_by: str | None, descending: bool
) -> Index | None:
    """The composite index a query needs, or None when single-field indexes serve it."""
    equal = {name for name, op, _ in where if op in _EQUALITY}
    ranged = {name for name, op, _ in where if op not in _EQUALITY}
    sorted_by = ranged | ({order_by} if order_by else set())
    if not sorted_by or (len(sorted_by) == 1 and not equal - sorted_by):
        return None
    direction = DESCENDING if descending else ASCENDING
    # Equality fields first, then the range field (Firestore orders by it first), then order_by.
    tail = sorted(ranged - {order_by}) + ([order_by] if order_by else [])
    fields = [(f, ASCENDING) for f in sorted(equal - sorted_by)]
    fields += [(f, direction if f == order_by else ASCENDING) for f in tail]
    return Index(kind, tuple(fields))
