"""Periodic repair: expire sessions, re-publish unacked commands, mark silent agents offline.

Cloud Scheduler calls the `sweeper` function; the local stack runs it on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.core.models import utcnow
from tether.core.ports import Store
from tether.service import ratelimit, tickets, tokens
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions

# Kinds whose documents are worthless after their `expires_at` (Firestore's TTL policies in the
# cloud delete them too; this list is what those policies must cover).
EXPIRING_KINDS = (tokens.REVOKED, ratelimit.KIND, tickets.KIND)


@dataclass
class Sweeper:
    sessions: Sessions
    commands: Commands
    agents: Agents
    store: Store
    republish_after: float = 10.0

    def run(self) -> dict[str, int]:
        return {
            "expired_sessions": len(self.sessions.expire()),
            "idle_hibernated": len(self.sessions.hibernate_idle()),
            "republished_commands": self.commands.republish_stale(self.republish_after),
            "offline_agents": len(self.agents.mark_offline()),
            "expired_records": sum(self._purge(kind) for kind in EXPIRING_KINDS),
        }

    def _purge(self, kind: str) -> int:
        gone = self.store.query(kind, [("expires_at", "<=", utcnow())])
        for doc in gone:
            self.store.delete(kind, doc.id)
        return len(gone)
