"""What an agent has done, kept in a Store, so a redelivered command never runs twice.

The local agent keeps it in a SQLite file of its own; an agent on Cloud Run, whose instances
come and go and run side by side, keeps it in Firestore, where claiming a command (creating
its entry) is atomic across instances.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from tether.core.models import utcnow
from tether.core.ports import Store
from tether.errors import Conflict, NotFound

JOURNAL = "agent_journal"  # command_id -> {session_id, state: started | done, result}
STOPPED = "agent_stopped"  # session ids whose stop has run
KEEP = timedelta(days=7)  # `expires_at`: Firestore's TTL policy deletes entries after this
EXPIRING = (JOURNAL, STOPPED)  # what those TTL policies must cover


class Journal:
    def __init__(self, store: Store, keep: timedelta = KEEP) -> None:
        """`keep`: how long an entry lasts, as long as a duplicate of its command can come.
        Pub/Sub holds an unacked message for up to KEEP; the in-process bus holds none, so
        there only the sweeper, republishing a pending command, sends one again."""
        self.store = store
        self.keep = keep

    def begin(self, command_id: str, session_id: str | None) -> tuple[str, dict[str, Any] | None]:
        """Claim a command. Returns ("new", None) the first time; ("started", None) if a claim
        exists without a result (a crash or a concurrent duplicate); ("done", result) after."""
        entry = {"session_id": session_id, "state": "started", "expires_at": utcnow() + self.keep}
        try:
            self.store.create(JOURNAL, command_id, entry)
            return "new", None
        except Conflict:
            doc = self.store.get(JOURNAL, command_id)
        if doc is None:  # claimed, then expired: long enough ago to count as a crash
            return "started", None
        return str(doc.data["state"]), doc.data.get("result")

    def finish(self, command_id: str, session_id: str | None, result: dict[str, Any]) -> None:
        entry = {"session_id": session_id, "state": "done", "result": result,
                 "expires_at": utcnow() + self.keep}  # fmt: skip
        # Claimed at version 1, and only the claimant finishes it: no need to read it first.
        # (Conflict: a duplicate running elsewhere finished first; NotFound: it expired.)
        with contextlib.suppress(Conflict, NotFound):
            self.store.update(JOURNAL, command_id, entry, 1)

    def mark_stopped(self, session_id: str) -> None:
        with contextlib.suppress(Conflict):  # a redelivered stop
            self.store.create(STOPPED, session_id, {"expires_at": utcnow() + self.keep})

    def was_stopped(self, session_id: str) -> bool:
        return self.store.get(STOPPED, session_id) is not None

    def close(self) -> None:
        self.store.close()
