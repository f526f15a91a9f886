"""The agent registry: registration and heartbeats from events, placement of new sessions."""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core.lifecycle import ACTIVE_SESSION_STATES, LIVE_SESSION_STATES
from tether.core.models import Agent, AgentStatus, utcnow
from tether.core.ports import Filter, Position, Store, Stored
from tether.errors import Conflict, NotFound, Unavailable
from tether.service.recent import Recent
from tether.service.repo import Repo

# Agents that hold no workspaces: Kubently's cluster agents (kubectl), Openctrol's desktops.
NO_WORKSPACES = ("cluster", "desktop")
# What each OnMemOS provider name means as an agent platform.
PROVIDER_PLATFORMS: dict[str, tuple[str, ...]] = {
    "cloud_run": ("cloud_run",),
    "gke": ("gke", "kubernetes"),
    "workstations": ("workstations",),
    "local": ("local",),
    "kubernetes": ("gke", "kubernetes"),
}
OFFLINE_MESSAGE = "Agent {} is offline"
# The log event of an agent marked offline (`extra={"event": ...}`): a log-based metric counts
# it for the "agents offline" alert (terraform/modules/monitoring).
AGENT_OFFLINE_EVENT = "agent_offline"

log = logging.getLogger(__name__)
SLOTS = "agent_slots"  # one document per session using an agent's capacity
BLIND_TRIES = 2  # slots tried before reading which are taken
# A slot is taken a moment before its session is saved: younger ones are never stale.
SLOT_SETTLE = timedelta(minutes=1)
# Slots a sweep looks at, after the last it looked at: a pass costs the same however many
# sessions run, and a slot a crash left taken is freed within (slots / this) passes.
STALE_BATCH = 500


@dataclass
class Agents:
    store: Store
    grace: float = 30.0
    # Providers a local agent serves when no agent of their own platforms is online
    # (TETHER_LOCAL_STANDS_IN: `tether up` stands in for gke and cloud_run; a deployment, none).
    stand_in: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "agents", Agent)
        self.recent: Recent[list[Agent]] = Recent()  # the agents, for placing sessions
        self._stale_from: Position | None = None  # where the next `release_stale` goes on

    def register(
        self,
        agent_id: str,
        platform: str,
        region: str,
        capacity: int,
        details: dict[str, Any] | None = None,
    ) -> Agent:
        try:
            return self._register(agent_id, platform, region, capacity, details or {})
        finally:
            self.recent.forget()  # a new agent, or new capacity: placed on from now on

    def _register(
        self, agent_id: str, platform: str, region: str, capacity: int, details: dict[str, Any]
    ) -> Agent:
        now = utcnow()
        fresh = Agent(
            id=agent_id, platform=platform, region=region, capacity=capacity, details=details
        )
        if self.repo.find(agent_id) is None:
            try:
                return self.repo.create(agent_id, fresh)
            except Conflict:
                pass

        back = False

        def update(a: Agent) -> Agent:
            nonlocal back
            a.platform, a.region, a.capacity, a.details = platform, region, capacity, details
            a.epoch += 1
            a.registered_at = a.last_heartbeat = now
            back = a.status is AgentStatus.OFFLINE
            if back:
                a.status = AgentStatus.ONLINE
            return a

        agent = self.repo.mutate(agent_id, update)
        if back:  # as `mark_offline` would have on its next pass
            self._mark_sessions(agent_id, OFFLINE_MESSAGE.format(agent_id), "")
        return agent

    def heartbeat(
        self,
        agent_id: str,
        platform: str,
        region: str,
        capacity: int,
        details: dict[str, Any] | None = None,
    ) -> None:
        """One write, no read: only the time moves (and the details, for an agent that sends
        them). An agent marked offline counts as online again from this beat on
        (`status_of`); the sweeper puts its record and its sessions' messages right
        (`mark_offline`)."""
        fields: dict[str, Any] = {"last_heartbeat": utcnow()}
        if details is not None:
            fields["details"] = details
        try:
            self.store.patch("agents", agent_id, fields)
        except NotFound:  # an agent we never saw register (the store was reset, say)
            self.register(agent_id, platform, region, capacity, details)

    def _mark_sessions(self, agent_id: str, old: str, new: str) -> None:
        """Set the status message of the agent's live sessions (where it still reads `old`)."""
        states = [s.value for s in LIVE_SESSION_STATES]
        for doc in self.store.query("sessions", [("agent_id", "==", agent_id)]):
            if doc.data.get("state") not in states or doc.data.get("message", "") != old:
                continue
            with contextlib.suppress(Conflict):  # the session moved on: its message is newer
                self.store.update("sessions", doc.id, {**doc.data, "message": new}, doc.version)

    def status_of(self, agent: Agent, now: datetime | None = None) -> AgentStatus:
        """Draining while an admin says so; else online while its heartbeats come in time."""
        if agent.status is AgentStatus.DRAINING:
            return agent.status
        fresh = agent.last_heartbeat >= (now or utcnow()) - timedelta(seconds=self.grace)
        return AgentStatus.ONLINE if fresh else AgentStatus.OFFLINE

    def is_online(self, agent: Agent, now: datetime | None = None) -> bool:
        return self.status_of(agent, now) is AgentStatus.ONLINE

    def check_reachable(self, agent_id: str) -> None:
        """Raise `Unavailable` (AGENT_OFFLINE) when the agent is known and its heartbeats have
        stopped: work sent to it would wait for its return instead of being answered. Read
        from the list placement uses (at most `recent`'s seconds old), not once a call."""
        agent = next((a for a in self._all() if a.id == agent_id), None)
        if agent is not None and self.status_of(agent) is AgentStatus.OFFLINE:
            raise Unavailable(
                OFFLINE_MESSAGE.format(agent_id) + ": try again once it is back",
                code="AGENT_OFFLINE",
                retry_after=max(1, round(self.grace / 3)),  # about one heartbeat
            )

    def _all(self) -> list[Agent]:
        return self.recent.get(None, lambda: self.repo.query(order_by="id"))

    def live_sessions(self, agent_id: str) -> int:
        """Sessions using the agent's capacity now: the slots taken, counted in the store (one
        read however many sessions the agent has, or has had)."""
        return self.store.count(SLOTS, [("agent_id", "==", agent_id)])

    def _slots(self, agent_id: str) -> list[Stored]:
        return self.store.query(SLOTS, [("agent_id", "==", agent_id)])

    def candidates(self, provider: str, prefer: tuple[str, ...] = ()) -> list[Agent]:
        """Online agents for `provider` ("auto": any platform, those in `prefer` first; where
        it has no agent at all, local ones if it is a provider they stand in for), to try in
        order: first the less loaded of two of the best kind picked at random (two
        choices balance load nearly as well as knowing every agent's, at two reads), then
        the rest. Capacity is taken by `reserve`, which may still find one full."""
        platforms = None if provider == "auto" else PROVIDER_PLATFORMS.get(provider, (provider,))

        def online(platforms: tuple[str, ...] | None) -> list[Agent]:
            now = utcnow()
            return [a for a in self._all() if self.is_online(a, now)
                    and a.platform not in NO_WORKSPACES
                    and (platforms is None or a.platform in platforms)]  # fmt: skip

        found = online(platforms)
        if not found:  # none a moment ago: one may have registered since
            self.recent.forget()
            found = online(platforms)
        # Stood in for only where the provider has no agent at all (one offline is waited
        # for); the session tells where it runs.
        own = platforms or ()
        if (not found and provider in self.stand_in
                and all(a.platform not in own for a in self._all())):  # fmt: skip
            found = online(PROVIDER_PLATFORMS["local"])
        if not found:
            where = "" if provider == "auto" else f" for provider '{provider}'"
            raise Unavailable(
                f"No online agents available{where}", field="provider", code="NO_AGENTS_AVAILABLE"
            )

        def kind(a: Agent) -> int:
            return prefer.index(a.platform) if a.platform in prefer else len(prefer)

        random.shuffle(found)
        found.sort(key=kind)
        best = [a for a in found if kind(a) == kind(found[0])][:2]
        loads = {a.id: self.live_sessions(a.id) / max(a.capacity, 1) for a in best}
        best.sort(key=lambda a: loads[a.id])
        return best + found[len(best) :]

    def reserve(self, agent: Agent, session_id: str) -> str | None:
        """A slot of the agent's capacity for the session, or None if all are taken. A slot is
        a document made only if it is not there (the store's atomic create), so any number of
        instances creating at once never take more slots than the agent has. A slot whose
        session has stopped using it (its release not made yet, or lost) is taken back."""
        slots = [f"{agent.id}:{i}" for i in range(agent.capacity)]
        random.shuffle(slots)  # racing creates try different slots first
        for slot in slots[:BLIND_TRIES]:  # mostly free: take one without reading which
            with contextlib.suppress(Conflict):
                return self._take(slot, agent.id, session_id)
        held = {d.id: d for d in self._slots(agent.id)}
        free = [slot for slot in slots if slot not in held]
        stale = [slot for slot in slots if slot in held and self._stale(held[slot])]
        for slot in free + stale:
            if slot in held:  # only as read: its release, or another reserve, may be first
                self.store.delete(SLOTS, slot, held[slot])
            with contextlib.suppress(Conflict):  # another session took it meanwhile
                return self._take(slot, agent.id, session_id)
        return None

    def _take(self, slot: str, agent_id: str, session_id: str) -> str:
        taken = {"agent_id": agent_id, "session_id": session_id, "taken_at": utcnow()}
        self.store.create(SLOTS, slot, taken)
        return slot

    def _stale(self, slot: Stored) -> bool:
        """Whether the slot's session no longer uses it: it names this slot and is saved in a
        state that uses no capacity, or (once the slot has had time to see its session saved)
        it is gone or names another slot."""
        session = self.store.get("sessions", str(slot.data.get("session_id")))
        if session is not None and session.data.get("slot") == slot.id:
            return session.data.get("state") not in {s.value for s in ACTIVE_SESSION_STATES}
        taken_at = slot.data.get("taken_at")
        when = taken_at if isinstance(taken_at, datetime) else datetime.fromisoformat(str(taken_at))
        return when <= utcnow() - SLOT_SETTLE

    def release(self, slot: str | None, session_id: str) -> None:
        """Frees the session's slot (if it still holds it: idempotent)."""
        if slot is None:
            return
        doc = self.store.get(SLOTS, slot)
        if doc is not None and doc.data.get("session_id") == session_id:
            self.store.delete(SLOTS, slot, doc)  # not a slot taken again meanwhile

    def release_stale(self, batch: int = STALE_BATCH) -> int:
        """Frees slots whose session no longer uses them (a release that a crash lost). Looks
        at `batch` slots at most (and their sessions), from where the last pass stopped:
        never history, and no more each pass however many sessions run."""
        slots = self.store.query(SLOTS, [], limit=batch, after=self._stale_from)
        self._stale_from = (None, slots[-1].id) if len(slots) == batch else None
        stale = [d for d in slots if self._stale(d)]
        # Only the slot judged: one released and taken again since is another session's.
        return sum(self.store.delete(SLOTS, d.id, d) for d in stale)

    def mark_offline(self) -> list[str]:
        """Records follow the heartbeats: an agent past its grace is marked offline, and its
        live sessions say so; one whose heartbeats came back is marked online, and its
        sessions' messages cleared. Returns the ids of the agents marked offline."""
        now = utcnow()
        gone = []
        for was in (AgentStatus.ONLINE, AgentStatus.OFFLINE):
            for agent in self.repo.query([("status", "==", was.value)]):
                now_is = self.status_of(agent, now)
                if now_is is was:
                    continue
                if not self._record(agent.id, was, now_is, now):
                    continue  # moved meanwhile (a heartbeat came, say)
                self.recent.forget()
                message = OFFLINE_MESSAGE.format(agent.id)
                if now_is is AgentStatus.OFFLINE:
                    log.warning(message, extra={"event": AGENT_OFFLINE_EVENT, "agent_id": agent.id})
                    self._mark_sessions(agent.id, "", message)
                    gone.append(agent.id)
                else:
                    self._mark_sessions(agent.id, message, "")
        return gone

    def _record(self, agent_id: str, was: AgentStatus, now_is: AgentStatus, now: datetime) -> bool:
        """Moves the agent's record from `was` to `now_is` if both still hold; whether it did."""
        moved = False

        def move(a: Agent) -> Agent | None:
            nonlocal moved
            moved = a.status is was and self.status_of(a, now) is now_is
            if not moved:
                return None
            a.status = now_is
            return a

        self.repo.mutate(agent_id, move)
        return moved

    def set_status(self, agent_id: str, status: AgentStatus) -> Agent:
        """An admin drains an agent (no new sessions) or puts it back online."""

        def move(a: Agent) -> Agent:
            a.status = status
            return a

        self.repo.get(agent_id, "Agent")
        moved = self.repo.mutate(agent_id, move)
        self.recent.forget()
        return moved

    def deregister(self, agent_id: str) -> None:
        """Forget an agent (an admin removes it). Refused while it has live sessions (anything
        not terminated: a hibernated one wakes on its agent) or holds a slot (a session being
        placed on it now): Conflict, naming them. An agent still running registers again with
        its next heartbeat."""
        self.repo.get(agent_id, "Agent")
        live = [s.value for s in LIVE_SESSION_STATES]
        where: list[Filter] = [("agent_id", "==", agent_id), ("state", "in", live)]
        found = self.store.query("sessions", where, limit=1)
        if found or self._slots(agent_id):
            which = f" (session {found[0].id}, {found[0].data.get('state')})" if found else ""
            raise Conflict(
                f"Agent {agent_id} has live sessions{which}: terminate them, or drain the agent "
                "and wait for them to end, before removing it",
                field="agent_id",
                code="AGENT_HAS_SESSIONS",
            )
        self.repo.delete(agent_id)
        self.recent.forget()

    def sessions_of(self, agent_id: str) -> list[dict[str, Any]]:
        states = [s.value for s in LIVE_SESSION_STATES]
        docs = self.store.query("sessions", [("agent_id", "==", agent_id)])
        return [d.data | {"id": d.id} for d in docs if d.data.get("state") in states]
