"""The audit log: who changed what, and when. Every mutating call on every surface (the Router
records it), every relayed connection's start and end (the relay does), each a record of
{actor, action, target, result, time, request id} and never a credential.

Records are only ever added: nothing edits or deletes one but their expiry (`purge_at`, after
TETHER_AUDIT_RETENTION: the sweeper locally, Firestore's TTL policy in the cloud). Adding one
is one store write, and a failure to add one is logged, never raised: the call it records has
been made, and its caller gets its answer.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.core.models import Principal, Record, utcnow
from tether.core.ports import Filter, Store
from tether.errors import Forbidden
from tether.service import pages
from tether.service.pages import Page

log = logging.getLogger(__name__)
KIND = "audit_log"
MAX_PAGE = 200
MAX_FIELD = 256  # characters of an actor, action or target kept
# A request id a client may choose (`X-Request-Id`); anything else is replaced by one of ours.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
HEADER = "X-Request-Id"


def request_id(given: str | None) -> str:
    """`given` if it is a well-formed request id, else a new one."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return f"req-{secrets.token_hex(12)}"


class AuditRecord(Record):
    id: str
    created_at: datetime  # the time of the call (`time` in answers)
    actor: str | None  # the caller's id; a failed sign-in: the username it named; None: unknown
    action: str  # surface.operation (`onmemos.create_session`) or relay.connect/disconnect
    target: str  # what the call was about (a session's id); "" if nothing in particular
    result: str  # the HTTP status, or for a relayed connection ok, refused, closed
    request_id: str
    purge_at: datetime


def _clip(text: str) -> str:
    return text[:MAX_FIELD]


def actor_of(who: Principal | str | None) -> str | None:
    if isinstance(who, Principal):
        return who.id
    return _clip(who) if who else None


@dataclass
class Audit:
    store: Store
    retention: timedelta = timedelta(days=30)

    def record(
        self,
        actor: Principal | str | None,
        action: str,
        target: str,
        result: str | int,
        request_id: str,
        when: datetime | None = None,
    ) -> AuditRecord | None:
        """Adds a record (one write); None, logged, when the store refused it."""
        when = when or utcnow()
        record = AuditRecord(
            id=f"{when.strftime('%Y%m%d%H%M%S%f')}-{secrets.token_hex(4)}",
            created_at=when,
            actor=actor_of(actor),
            action=_clip(action),
            target=_clip(target),
            result=str(result),
            request_id=request_id,
            purge_at=when + self.retention,
        )
        try:
            self.store.create(KIND, record.id, record.doc())
        except Exception:
            log.exception("audit record lost: %s %s %s", record.action, record.target, result)
            return None
        return record

    def query(
        self,
        principal: Principal,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AuditRecord]:
        """Records newest first, for an admin only: one query of at most `limit` (+1, to know
        whether there is more), whatever the log holds."""
        if not principal.is_admin:
            raise Forbidden("The audit log is for admins", code="ADMIN_REQUIRED")
        where: list[Filter] = [
            (name, "==", value)
            for name, value in (("actor", actor), ("action", action), ("target", target))
            if value is not None
        ]
        if since is not None:
            where.append(("created_at", ">=", since))
        after = pages.position(cursor) if cursor else None
        docs = self.store.query(KIND, where, "created_at", True, limit + 1, 0, after)
        found = [AuditRecord.model_validate(d.data) for d in docs]
        more = found[limit - 1] if len(found) > limit else None
        token = pages.cursor(more.created_at, more.id) if more else None
        return Page(found[:limit], len(found[:limit]), token)
