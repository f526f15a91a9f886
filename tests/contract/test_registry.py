"""Agent registry and scheduler over the bus, on each adapter pair (embedded and emulators)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tether.core.models import AgentStatus, Principal, Role, SessionRequest
from tether.errors import Unavailable

ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


def wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    return check()


def test_agents_register_and_heartbeat_over_the_bus(stack: Any) -> None:
    bus, agents = stack.services.bus, stack.services.agents
    bus.publish_event({"type": "register", "agent_id": "gke-eu-1", "platform": "gke",
                       "region": "europe-west1", "capacity": 2})  # fmt: skip
    agent = wait_for(lambda: agents.repo.find("gke-eu-1"))
    assert (agent.platform, agent.region, agent.capacity) == ("gke", "europe-west1", 2)
    before = agent.last_heartbeat
    bus.publish_event({"type": "heartbeat", "agent_id": "gke-eu-1"})
    assert wait_for(lambda: agents.repo.get("gke-eu-1").last_heartbeat > before)
    # the local agent registered the same way when the stack started, and got its ack
    assert stack.agent.registered.is_set()
    assert agents.repo.get(stack.agent.agent_id).status is AgentStatus.ONLINE


def test_scheduler_skips_draining_offline_and_full_agents(stack: Any) -> None:
    agents, sessions = stack.services.agents, stack.services.sessions
    local = stack.agent.agent_id
    agents.set_status(local, AgentStatus.DRAINING)
    with pytest.raises(Unavailable) as info:
        sessions.create(ADMIN, SessionRequest(template="shell"), wait=0)
    assert info.value.details["code"] == "NO_AGENTS_AVAILABLE"
    agents.set_status(local, AgentStatus.ONLINE)

    agents.register(local, "local", "local", capacity=1)  # as the agent, restarted smaller
    first = sessions.create(ADMIN, SessionRequest(template="shell"), wait=30)
    assert first.state.value == "running" and first.agent_id == local
    with pytest.raises(Unavailable) as info:
        sessions.create(ADMIN, SessionRequest(template="shell"), wait=0)
    assert info.value.details["code"] == "AGENT_CAPACITY_EXCEEDED"
    sessions.hibernate(ADMIN, first.id)  # a hibernated session frees its slot
    second = sessions.create(ADMIN, SessionRequest(template="shell"), wait=30)
    assert second.state.value == "running"


def test_silent_agent_goes_offline_and_its_sessions_say_so(stack: Any) -> None:
    agents, sessions = stack.services.agents, stack.services.sessions
    s = sessions.create(ADMIN, SessionRequest(template="shell"), wait=30)
    stack.agent.stop()  # no more heartbeats
    agents.grace = 0.5
    time.sleep(0.6)
    assert stack.agent.agent_id in agents.mark_offline()
    assert sessions.repo.get(s.id).message == f"Agent {stack.agent.agent_id} is offline"
    assert sessions.repo.get(s.id).state.value == "running"  # not ended: it may come back
    with pytest.raises(Unavailable):
        sessions.create(ADMIN, SessionRequest(template="shell"), wait=0)
    with pytest.raises(Unavailable) as info:  # refused now, not left to wait for it
        sessions.execute(ADMIN, s.id, "true", 10)
    assert info.value.details["code"] == "AGENT_OFFLINE"
    # Its heartbeats come back (one write each, read nothing): online from the first one,
    # and the next sweep puts its record and its sessions' messages right.
    agents.grace = 30
    agents.heartbeat(stack.agent.agent_id, "local", "local", 10)
    assert agents.is_online(agents.repo.get(stack.agent.agent_id))
    assert agents.mark_offline() == []
    assert agents.repo.get(stack.agent.agent_id).status is AgentStatus.ONLINE
    assert sessions.repo.get(s.id).message == ""


def test_malformed_events_are_dropped_not_redelivered_forever(stack: Any) -> None:
    bus, agents = stack.services.bus, stack.services.agents
    for junk in ({"type": "heartbeat"}, {"type": "command_result", "agent_id": "x"},
                 {"type": "register", "agent_id": "y", "capacity": "lots"}):  # fmt: skip
        stack.services.events.handle(junk)  # logged and dropped, no exception
        bus.publish_event(junk)
    bus.publish_event({"type": "register", "agent_id": "after-junk", "platform": "gke",
                       "capacity": {"max_sessions": 7}})  # fmt: skip
    agent = wait_for(lambda: agents.repo.find("after-junk"))
    assert agent is not None and agent.capacity == 7
    assert agents.repo.find("y") is None
