"""The Firestore composite indexes Tether's queries need: the one list Terraform declares.

Firestore answers a query from its automatic single-field indexes when the query filters by
equality only (on any number of fields), or filters and orders on a single field. A query with
equality filters and an order on another field is served by merging one composite index per
equality field, each (that field, the order field); anything else needs its own composite
index. The Firestore emulator never asks for one, so the Firestore adapter checks every query
against this list: a query run in the tests without its index fails there, as in the cloud.

`python -m tether.store.indexes` writes the list as the JSON Terraform reads
(terraform/modules/firestore/indexes.json; a test keeps the two equal).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.core.ports import Filter

ASCENDING, DESCENDING, CONTAINS = "ASCENDING", "DESCENDING", "CONTAINS"
_EQUALITY = ("==", "in")
_ARRAY = ("contains", "contains_any")


@dataclass(frozen=True)
class Index:
    collection: str  # the kind, without any adapter prefix
    fields: tuple[tuple[str, str], ...]  # (field path, ASCENDING | DESCENDING | CONTAINS)


def _pairs(
    kind: str, filtered: Iterable[str], arrays: Iterable[str], sorts: Iterable[str]
) -> tuple[Index, ...]:
    """The (filter field, order field) indexes that let Firestore merge any mix of equality
    filters on `filtered` (array membership on `arrays`) under an order on any of `sorts`."""
    return tuple(
        Index(kind, ((f, CONTAINS if f in arrays else ASCENDING), (s, direction)))
        for s in sorts
        for direction in (ASCENDING, DESCENDING)
        for f in (*filtered, *arrays)
        if f != s
    )


# The session lists: OnMemOS's (owner, namespace, user, state, a workspace tag; oldest first)
# and StreamSpace's (owner, user, template, platform, agent, state, tags; four orders).
_SESSION_LISTS = _pairs(
    "sessions",
    ("owner", "namespace", "user", "template", "platform", "agent_id", "state"),
    ("tags",),
    ("created_at", "updated_at", "user", "state"),
)

COMPOSITE_INDEXES: tuple[Index, ...] = (
    Index("users", (("role", ASCENDING), ("username", ASCENDING))),  # Users.page
    # Sessions.expire: live ones whose TTL has passed.
    Index("sessions", (("state", ASCENDING), ("expires_at", ASCENDING))),
    *_SESSION_LISTS,
    # A session's events (its expiry warnings), oldest first (Warnings.listed). The sweeper's
    # queries for warnings and webhooks due are on one field each (`warn_at`,
    # `next_attempt_at`): single-field indexes serve them.
    Index("session_events", (("session_id", ASCENDING), ("time", ASCENDING))),
    # Kubently: the live debug sessions (/health).
    Index("debug_sessions", (("open", ASCENDING), ("expires_at", ASCENDING))),
    # Kubently's audit trail: by owner, cluster and session, newest first, in a time range.
    *_pairs("kubectl_runs", ("owner", "cluster_id", "session_id"), (), ("created_at",)),
    # The audit log (tether.service.audit): by actor, action or target, newest first, since
    # a time.
    *(
        Index("audit_log", ((f, ASCENDING), ("created_at", DESCENDING)))
        for f in ("actor", "action", "target")
    ),
    # Openctrol: a desktop agent's live sessions (its session limit, /api/v1/health).
    Index(
        "desktop_sessions",
        (("agent_id", ASCENDING), ("open", ASCENDING), ("expires_at", ASCENDING)),
    ),
    # SentinelStacks: a user's images, newest first (Images.list_images), and the registry's
    # search by keyword, newest tags first (Images.search).
    Index("user_images", (("owner", ASCENDING), ("added_at", DESCENDING))),
    Index("image_tags", (("keywords", CONTAINS), ("updated_at", DESCENDING))),
    # SentinelStacks: a user's agents and an agent's conversations, newest first; a
    # conversation's latest messages; an agent's events, as they come and latest first.
    Index("ai_agents", (("owner", ASCENDING), ("created_at", DESCENDING))),
    Index("ai_conversations", (("agent_id", ASCENDING), ("updated_at", DESCENDING))),
    Index("ai_messages", (("conversation_id", ASCENDING), ("seq", DESCENDING))),
    Index("ai_events", (("agent_id", ASCENDING), ("timestamp", ASCENDING))),
    Index("ai_events", (("agent_id", ASCENDING), ("timestamp", DESCENDING))),
    # A session's terminal recordings, newest first (tether.service.recordings).
    Index("recordings", (("session_id", ASCENDING), ("started_at", DESCENDING))),
)


def missing(
    kind: str,
    where: Sequence[Filter],
    order_by: str | None,
    descending: bool,
    declared: Iterable[Index] = COMPOSITE_INDEXES,
) -> Index | None:
    """A composite index the query needs that is not `declared`, or None when it can run."""
    have = set(declared)
    equal = {name for name, op, _ in where if op in _EQUALITY}
    arrays = {name for name, op, _ in where if op in _ARRAY}
    ranged = {name for name, op, _ in where if op not in _EQUALITY + _ARRAY}
    sorted_by = ranged | ({order_by} if order_by else set())
    filtered = (equal | arrays) - sorted_by
    if not sorted_by or (len(sorted_by) == 1 and not filtered):
        return None  # single-field indexes, merged
    direction = DESCENDING if descending else ASCENDING

    def mode(f: str) -> str:
        return CONTAINS if f in arrays else ASCENDING

    # One index: equality fields first, then the range field (Firestore orders by it first),
    # then order_by.
    tail = sorted(ranged - {order_by}) + ([order_by] if order_by else [])
    fields = [(f, mode(f)) for f in sorted(filtered)]
    fields += [(f, direction if f == order_by else ASCENDING) for f in tail]
    whole = Index(kind, tuple(fields))
    if whole in have:
        return None
    if order_by and not ranged - {order_by}:  # merged pairs serve it as well
        pairs = [Index(kind, ((f, mode(f)), (order_by, direction))) for f in sorted(filtered)]
        return next((p for p in pairs if p not in have), None)
    return whole


def _spec(field: str, mode: str) -> dict[str, str]:
    return {"field_path": field, "array_config" if mode == CONTAINS else "order": mode}


def as_json(indexes: Iterable[Index] = COMPOSITE_INDEXES) -> str:
    """The list as Terraform's `google_firestore_index` resources take it."""
    entries = [
        {"collection": i.collection, "fields": [_spec(f, m) for f, m in i.fields]} for i in indexes
    ]
    return json.dumps(entries, indent=2) + "\n"


if __name__ == "__main__":
    print(as_json(), end="")
