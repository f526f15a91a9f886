"""The agent registry: registration and heartbeats from events, placement of new sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core.lifecycle import LIVE_SESSION_STATES
from tether.core.models import Agent, AgentStatus, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Unavailable
from tether.service.repo import Repo

# What each OnMemOS provider name means as an agent platform.
PROVIDER_PLATFORMS: dict[str, tuple[str, ...]] = {
    "cloud_run": ("cloud_run",),
    "gke": ("gke", "kubernetes"),
    "workstations": ("workstations",),
    "local": ("local",),
}


@dataclass
class Agents:
    store: Store
    grace: float = 30.0

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "agents", Agent)

    def register(self, agent_id: str, platform: str, region: str, capacity: int) -> Agent:
        now = utcnow()
        fresh = Agent(id=agent_id, platform=platform, region=region, capacity=capacity)
        if self.repo.find(agent_id) is None:
            try:
                return self.repo.create(agent_id, fresh)
            except Conflict:
                pass

        def update(a: Agent) -> Agent:
            a.platform, a.region, a.capacity = platform, region, capacity
            a.epoch += 1
            a.registered_at = a.last_heartbeat = now
            if a.status is AgentStatus.OFFLINE:
                a.status = AgentStatus.ONLINE
            return a

        return self.repo.mutate(agent_id, update)

    def heartbeat(self, agent_id: str, data: dict[str, Any]) -> Agent | None:
        if self.repo.find(agent_id) is None:
            # A heartbeat from an agent we never saw register (e.g. the store was reset).
            return self.register(
                agent_id,
                str(data.get("platform", "local")),
                str(data.get("region", "local")),
                int(data.get("capacity", 10)),
            )

        def beat(a: Agent) -> Agent:
            a.last_heartbeat = utcnow()
            if a.status is AgentStatus.OFFLINE:
                a.status = AgentStatus.ONLINE
            return a

        return self.repo.mutate(agent_id, beat)

    def is_online(self, agent: Agent, now: datetime | None = None) -> bool:
        now = now or utcnow()
        fresh = agent.last_heartbeat >= now - timedelta(seconds=self.grace)
        return agent.status is AgentStatus.ONLINE and fresh

    def live_sessions(self, agent_id: str) -> int:
        states = [s.value for s in LIVE_SESSION_STATES]
        sessions = self.store.query("sessions", [("agent_id", "==", agent_id)])
        return sum(1 for s in sessions if s.data.get("state") in states)

    def pick(self, provider: str, prefer: tuple[str, ...] = ()) -> Agent:
        """An online agent with free capacity for `provider` ("auto": any platform, trying the
        platforms in `prefer` first), the least loaded first."""
        platforms = None if provider == "auto" else PROVIDER_PLATFORMS.get(provider, (provider,))
        candidates = [
            a
            for a in self.repo.query(order_by="id")
            if self.is_online(a) and (platforms is None or a.platform in platforms)
        ]
        if not candidates:
            where = "" if provider == "auto" else f" for provider '{provider}'"
            raise Unavailable(f"No online agents available{where}", field="provider")
        loads = {a.id: self.live_sessions(a.id) for a in candidates}
        free = [a for a in candidates if loads[a.id] < a.capacity]
        if not free:
            raise Unavailable("Every agent that could serve this session is at capacity")
        ranked = sorted(
            free,
            key=lambda a: (
                prefer.index(a.platform) if a.platform in prefer else len(prefer),
                loads[a.id] / max(a.capacity, 1),
            ),
        )
        return ranked[0]

    def mark_offline(self) -> list[str]:
        """Agents past their heartbeat grace go offline; returns their ids."""
        now = utcnow()
        gone = []
        for agent in self.repo.query([("status", "==", AgentStatus.ONLINE.value)]):
            if not self.is_online(agent, now):

                def off(a: Agent) -> Agent | None:
                    if self.is_online(a, now):
                        return None
                    a.status = AgentStatus.OFFLINE
                    return a

                self.repo.mutate(agent.id, off)
                gone.append(agent.id)
        return gone
