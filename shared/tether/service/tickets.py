"""Single-use tickets: a short-lived credential for one session, made for query strings.

A WebSocket from a browser cannot send headers, so its credential travels in the URL, where
proxies and logs may keep it. A ticket is worth little there: one use, one session, 60 s.
Only its hash is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.core.models import Principal, utcnow
from tether.core.ports import Store
from tether.errors import Unauthenticated

KIND = "tickets"
PREFIX = "tkt_"


def is_ticket(credential: str) -> bool:
    return credential.startswith(PREFIX)


def _id(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()[:40]


@dataclass
class Tickets:
    store: Store
    ttl: timedelta = timedelta(seconds=60)

    def issue(self, principal: Principal, session_id: str) -> tuple[str, datetime]:
        ticket = PREFIX + secrets.token_urlsafe(24)
        expires = utcnow() + self.ttl
        self.store.create(
            KIND,
            _id(ticket),
            {
                # Who issued it, as it was checked: redeemed, it is checked again (Auth.current)
                **principal.model_dump(mode="json"),
                "session_id": session_id,
                "expires_at": expires,
            },
        )
        return ticket, expires

    def redeem(self, ticket: str, session_id: str) -> Principal:
        """The ticket's principal, once: the ticket is spent even when it does not fit. (As it
        was when the ticket was issued: `Auth.current` says whether it still holds.)"""
        doc = self.store.get(KIND, _id(ticket))
        # Deleting is the claim: of two racing uses, only one deletes it.
        if doc is None or not self.store.delete(KIND, _id(ticket)):
            raise Unauthenticated("Ticket is invalid or already used", code="AUTH_TOKEN_INVALID")
        expires = doc.data["expires_at"]
        if (
            expires if isinstance(expires, datetime) else datetime.fromisoformat(expires)
        ) < utcnow():
            raise Unauthenticated("Ticket has expired", code="AUTH_TOKEN_EXPIRED")
        if doc.data["session_id"] != session_id:
            raise Unauthenticated("Ticket is for another session", code="AUTH_TOKEN_INVALID")
        return Principal.model_validate(
            {k: v for k, v in doc.data.items() if k in Principal.model_fields}
        )
