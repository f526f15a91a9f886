"""Periodic repair: expire sessions, re-publish unacked commands, mark silent agents offline.

Cloud Scheduler calls the `sweeper` function; the local stack runs it on a timer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tether.core import aiagents
from tether.core.models import utcnow
from tether.core.ports import Store
from tether.service import audit, commands, debug, desktops, idempotency, ratelimit, tickets, tokens
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions
from tether.service.warnings import EVENTS, Warnings
from tether.service.webhooks import KIND as DELIVERIES

# Kinds whose documents are worthless after their `expires_at` (Firestore's TTL policies in the
# cloud delete them too; this list is what those policies must cover).
EXPIRING_KINDS = (
    tokens.REVOKED,
    ratelimit.KIND,
    tickets.KIND,
    commands.KIND,
    idempotency.KIND,
    debug.RUN_KIND,
)  # Kubently's audit trail, kept for TETHER_AUDIT_RETENTION
# Kinds kept for a while after they end, and the field saying until when (TTL policies too).
RETAINED = {
    "sessions": "purge_at",
    audit.KIND: "purge_at",  # the audit log, kept for TETHER_AUDIT_RETENTION
    # Expiry warnings and their webhooks' outbox, kept TETHER_SESSION_RETENTION after the
    # deadline they warned of.
    EVENTS: "purge_at",
    DELIVERIES: "purge_at",
    debug.SESSION_KIND: "purge_at",
    desktops.SESSION_KIND: "purge_at",
    # Terminal recordings, their parts' index and what records now (TETHER_RECORDING_RETENTION).
    **dict.fromkeys(("recordings", "recording_parts", "recording_on"), "purge_at"),
    # SentinelStacks' agents and what they said and did (tether.core.aiagents).
    **dict.fromkeys(
        (aiagents.AGENTS, aiagents.CONVERSATIONS, aiagents.MESSAGES, aiagents.EVENTS), "purge_at"
    ),
}


@dataclass
class Sweeper:
    sessions: Sessions
    commands: Commands
    agents: Agents
    store: Store
    republish_after: float = 10.0
    warnings: Warnings | None = None  # expiry warnings and their webhooks

    def run(self) -> dict[str, int]:
        return {
            # Warned first: a session whose warning and end fall in one pass is warned still.
            "expiry_warnings": self.warnings.scan() if self.warnings else 0,
            "expired_sessions": len(self.sessions.expire()),
            "idle_hibernated": len(self.sessions.hibernate_idle()),
            "republished_commands": self.commands.republish_stale(self.republish_after),
            "started_sessions": self.sessions.start_unstarted(self.republish_after),
            "offline_agents": len(self.agents.mark_offline()),
            "slots_freed": self.agents.release_stale(),
            "expired_records": purge_expired(self.store, EXPIRING_KINDS),
            "purged_sessions": sum(purge_expired(self.store, [k], f) for k, f in RETAINED.items()),
            # Last: a slow receiver (TIMEOUT an attempt) holds up nothing else.
            "webhooks_delivered": self.warnings.send() if self.warnings else 0,
        }


# Documents one pass deletes of one kind at most: a pass costs a bounded amount however much
# is due (a backlog drains over the next passes; Firestore's TTL policies do the same work in
# the cloud).
PURGE_BATCH = 500


def purge_expired(
    store: Store, kinds: Iterable[str], field: str = "expires_at", batch: int = PURGE_BATCH
) -> int:
    """Delete up to `batch` documents of each of `kinds` whose `field` (a time) has passed;
    returns how many."""
    now, count = utcnow(), 0
    for kind in kinds:
        for doc in store.query(kind, [(field, "<=", now)], limit=batch):
            count += store.delete(kind, doc.id)
    return count
