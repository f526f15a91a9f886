"""The warning before expiry: some minutes before a session's TTL ends it or its idle timeout
hibernates it, an `expiry_warning` event on the session's events (and, with a webhook URL, a
signed POST from the outbox, `tether.service.webhooks`), carrying a one-call extend.

The sweeper asks the store for the sessions whose `warn_at` has come (stored with each
session, None once its deadline has been warned of: the query never reads the others). The
event's id is made from the session, the reason and the deadline, so a pass that dies half way
and runs again makes neither a second event nor a second delivery. The session then records
the deadline it was warned of; an extend moves the deadline and so arms the warning again.

The extend link is a signed token (HS256, the deployment's secret, an audience of its own)
naming the session and its owner as they were, valid until the deadline: `POST
/v1/sessions/{id}/extend` takes it as its only credential, and checks again that the owner's
access holds and the session is live. Tokens are minted when an event is shown or sent,
never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt
import orjson

from tether.core.models import Principal, Record, Session, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, NotFound, Unauthenticated
from tether.service import pages
from tether.service.auth import Auth
from tether.service.pages import Page
from tether.service.repo import Repo
from tether.service.sessions import Sessions
from tether.service.webhooks import Delivery, Webhooks, delivery_id

EVENTS = "session_events"
EXPIRY_WARNING = "expiry_warning"
AUDIENCE = "tether-extend"
BATCH = 100  # sessions one sweep warns at most (more wait for the next sweep)


class SessionEvent(Record):
    id: str
    session_id: str
    owner: str
    type: str = EXPIRY_WARNING
    reason: Literal["ttl", "idle"]
    deadline: datetime  # when the TTL ends it, or the idle timeout hibernates it
    time: datetime  # when the warning was made
    purge_at: datetime  # then the store deletes it (the sweeper, Firestore's TTL)


def event_id(session_id: str, reason: str, deadline: datetime) -> str:
    """One event a deadline: the same id however many passes make it."""
    key = f"{session_id}\0{reason}\0{deadline.isoformat()}"
    return "evt_" + hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class Warnings:
    store: Store
    sessions: Sessions
    auth: Auth
    webhooks: Webhooks
    secret: str  # the deployment's signing secret (as preview links use)
    public_url: str  # where the extend link points
    retention: timedelta = timedelta(days=7)  # an event is kept this long after its deadline

    def __post_init__(self) -> None:
        self.events = Repo(self.store, EVENTS, SessionEvent)

    # -- the sweeper's part --------------------------------------------------------------

    def scan(self, batch: int = BATCH) -> int:
        """Warn every session whose warning is due; returns how many were warned. Of an idle
        timeout, only once its workspace has said it is idle: it is asked first (`CHECK_IDLE`),
        and the answer warns (`after_idle_check`) or moves the deadline on (a process or a
        command still at work)."""
        now, warned = utcnow(), 0
        for session in self.sessions.repo.query([("warn_at", "<=", now)], limit=batch):
            due = session.deadline()
            if due is None or session.warn_at is None:
                continue  # (saved before it changed: the query's copy is the stored one)
            if due[1] == "idle":
                self.sessions.ask_idle(session, now, early=True)
            else:
                warned += self._warn(session, *due, now)
        return warned

    def after_idle_check(self, session_id: str) -> None:
        """Warns of the session's idle timeout if its warning is still due once its workspace
        has answered: no work was found that put the deadline off."""
        session, now = self.sessions.repo.find(session_id), utcnow()
        if session is None or session.warn_at is None or session.warn_at > now:
            return
        due = session.deadline()
        if due is not None and due[1] == "idle":
            self._warn(session, *due, now)

    def _warn(
        self, session: Session, deadline: datetime, reason: Literal["ttl", "idle"], now: datetime
    ) -> int:
        """The warning of `deadline`: its event, its webhook's delivery, and the session's
        mark that it was warned of it. 1 (one warned)."""
        event = SessionEvent(
            id=event_id(session.id, reason, deadline),
            session_id=session.id,
            owner=session.owner,
            reason=reason,
            deadline=deadline,
            time=now,
            purge_at=deadline + self.retention,
        )
        with contextlib.suppress(Conflict):  # made by a pass that died before the mark
            self.events.create(event.id, event)
        if session.webhook_url:
            self.webhooks.enqueue(
                Delivery(
                    id=delivery_id(event.id),
                    session_id=session.id,
                    event_id=event.id,
                    event=EXPIRY_WARNING,
                    url=session.webhook_url,
                    purge_at=event.purge_at,
                )
            )

        def mark(s: Session) -> Session:
            s.warned_for = deadline  # a later deadline (an extend) is warned of again
            return s

        with contextlib.suppress(Conflict, NotFound):
            self.sessions.repo.mutate(session.id, mark, start=session)
        return 1

    def send(self) -> int:
        """Send the webhooks due; returns how many were acknowledged."""
        return self.webhooks.send_due(self._render)

    def _render(self, delivery: Delivery) -> tuple[bytes, str] | None:
        event = self.events.find(delivery.event_id)
        session = self.sessions.repo.find(delivery.session_id)
        if event is None or session is None or not session.webhook_secret:
            return None
        return orjson.dumps(self.shown(event, self._owner(session.owner))), session.webhook_secret

    # -- what a user sees ----------------------------------------------------------------

    def shown(self, event: SessionEvent, owner: Principal | None) -> dict[str, Any]:
        """The event as its reader and its webhook get it: with a one-call extend while its
        deadline is ahead (and its owner still there); `extend` is null after."""
        extend = None
        if owner is not None and event.deadline > utcnow():
            extend = {
                "url": f"{self.public_url.rstrip('/')}/v1/sessions/{event.session_id}/extend",
                "token": self.issue(owner, event.session_id, event.deadline),
            }
        return {
            "type": event.type,
            "id": event.id,
            "session_id": event.session_id,
            "reason": event.reason,
            "deadline": event.deadline.isoformat(),
            "time": event.time.isoformat(),
            "extend": extend,
        }

    def _owner(self, user_id: str) -> Principal | None:
        user = self.auth.users.find(user_id)
        return Principal.of(user) if user is not None and user.active else None

    def listed(
        self, principal: Principal, session_id: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the caller's session's events, oldest first, after a cursor; and the
        cursor of the page after it (None at the end)."""
        session = self.sessions.get(principal, session_id)
        position = pages.position(after, "after") if after else None
        found = self.events.query(
            [("session_id", "==", session.id)], "time", limit=limit + 1, after=position
        )
        last = found[limit - 1] if len(found) > limit else None
        owner = self._owner(session.owner) if found else None
        page = Page(found[:limit], 0, pages.cursor(last.time, last.id) if last else None)
        return [self.shown(e, owner) for e in page.items], page.next_cursor

    # -- the extend link -----------------------------------------------------------------

    def issue(self, owner: Principal, session_id: str, deadline: datetime) -> str:
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "exp": int(deadline.timestamp()),
            "sid": session_id,
            "who": owner.model_dump(mode="json", exclude_none=True),
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def holder(self, authorization: str | None, session_id: str) -> Principal | None:
        """Whom `Authorization: Bearer <extend token>` acts for on `session_id`, as they are
        now; None when it holds no extend token (so the caller's credential is read as any
        other). A token for another session, or whose owner's access has ended, is refused."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            claims = jwt.decode(
                token.strip(),
                self.secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"require": ["exp", "aud", "sid", "who"]},
            )
            who = Principal.model_validate(claims["who"])
            sid = str(claims["sid"])
        except (jwt.InvalidTokenError, ValueError, TypeError):
            return None
        if sid != session_id:
            raise Unauthenticated("This extend token is for another session",
                                  code="AUTH_TOKEN_INVALID")  # fmt: skip
        return self.auth.current(who)

    def extend(
        self,
        holder: Principal,
        session_id: str,
        more: timedelta | None,
        left: timedelta | None,
    ) -> Session:
        """What the extend link does: more time for a session with a TTL; for one without
        (long-lived, warned of its idle timeout), activity now, which puts that off (an extend
        never gives a long-lived session a TTL it did not have)."""
        session = self.sessions.get(holder, session_id)
        if session.expires_at is not None:
            return self.sessions.extend(holder, session_id, more, left)
        self.sessions.usable(holder, session_id)
        self.sessions.touch(session, "api")
        return self.sessions.get(holder, session_id)
