"""Periodic repair: expire sessions, re-publish unacked commands, mark silent agents offline.

Cloud Scheduler calls the `sweeper` function; the local stack runs it on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.ratelimit import RateLimits
from tether.service.sessions import Sessions
from tether.service.tickets import Tickets
from tether.service.tokens import Tokens


@dataclass
class Sweeper:
    sessions: Sessions
    commands: Commands
    agents: Agents
    tokens: Tokens
    limits: RateLimits
    tickets: Tickets
    republish_after: float = 10.0

    def run(self) -> dict[str, int]:
        return {
            "expired_sessions": len(self.sessions.expire()),
            "idle_hibernated": len(self.sessions.hibernate_idle()),
            "republished_commands": self.commands.republish_stale(self.republish_after),
            "offline_agents": len(self.agents.mark_offline()),
            "expired_revocations": self.tokens.forget_expired(),
            "expired_rate_windows": self.limits.forget_expired(),
            "expired_tickets": self.tickets.forget_expired(),
        }
