"""A session's agent falls silent: its session stays, work for it is refused at once with a
503 that says when to try again, and it is served again as soon as the agent is back. It is
offline after its grace, not before (a missed heartbeat is nothing), and online again as soon
as it registers."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from flask.testing import FlaskClient
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.core.models import Principal, Role, SessionRequest, utcnow
from tether.local.stack import LocalStack
from tether.service.commands import PENDING_KEPT
from tether.settings import Settings
from tether.store.sqlite import SqliteStore

from tests.bodies import sans_id
from tests.surfaces.test_onmemos import create, h
from tests.waiting import wait_for


def restarted(stack: LocalStack, agent_id: str) -> Agent:
    """The stack's agent process started again (it registers, then beats)."""
    stack.agent = Agent(
        agent_id,
        stack.services.bus,
        stack.provisioner,
        Journal(SqliteStore(stack.settings.home / "agent" / "journal.db"), keep=PENDING_KEPT),
        heartbeat_interval=stack.settings.heartbeat_interval,
    )
    stack.agent.start()
    return stack.agent


def test_work_for_a_silent_agent_is_refused_until_it_is_back(
    api: FlaskClient, stack: LocalStack
) -> None:
    services = stack.services
    s = create(api)
    agent_id = services.sessions.repo.get(s["id"]).agent_id
    execute = f"/v1/sessions/{s['id']}/execute"
    assert api.post(execute, json={"command": "echo before"}, headers=h()).status_code == 200
    services.agents.grace = 2.0  # heartbeats every 0.5 s: three missed would not do it
    stack.agent.stop()  # silent from now on
    assert wait_for(lambda: not services.agents.is_online(services.agents.repo.get(agent_id)))

    def refused() -> bool:
        return api.post(execute, json={"command": "echo x"}, headers=h()).status_code == 503

    assert wait_for(refused, timeout=10), "work was still sent to the silent agent"
    r = api.post(execute, json={"command": "echo during"}, headers=h())
    body = r.get_json()
    assert r.status_code == 503  # in OnMemOS's shape: FastAPI's {"detail": ...}
    assert sans_id(body) == {"detail": f"Agent {agent_id} is offline: try again once it is back"}
    assert int(r.headers["Retry-After"]) >= 1
    services.sweeper.run()  # records follow the heartbeats
    listed = api.get(f"/v1/sessions/{s['id']}", headers=h()).get_json()
    assert listed["status"] == "running", "a silent agent's session is not ended"
    assert services.sessions.repo.get(s["id"]).message == f"Agent {agent_id} is offline"

    assert restarted(stack, agent_id).registered.wait(30)

    def served() -> bool:
        r = api.post(execute, json={"command": "echo after"}, headers=h())
        return r.status_code == 200 and r.get_json()["stdout"] == "after\n"

    assert wait_for(served, timeout=10), "still refused once the agent was back"
    services.sweeper.run()
    assert services.sessions.repo.get(s["id"]).message == ""


def test_offline_after_its_grace_not_on_one_missed_beat_and_online_once_it_registers(
    tmp_path: Path,
) -> None:
    """The defaults (a heartbeat every 10 s, offline after 30 s silent) a tenth as long: one
    missed beat changes nothing; silent for 60 s, the agent is offline between 30 and 45 s
    after its last beat, its session degraded (said so, not ended), and online again within
    one heartbeat of its return."""
    defaults = Settings()
    assert (defaults.heartbeat_interval, defaults.agent_grace) == (10.0, 30.0)
    beat, grace = 1.0, 3.0
    settings = Settings(home=tmp_path / "home", api_key="tether_silentkey001_" + "s" * 32,
                        heartbeat_interval=beat, agent_grace=grace)  # fmt: skip
    stack = LocalStack(settings, sweep_interval=0.2)
    stack.start()
    try:
        services = stack.services
        admin = Principal(id="admin", username="admin", role=Role.ADMIN)
        session = services.sessions.create(admin, SessionRequest(template="shell"), wait=60)
        agent_id = session.agent_id or ""

        def agent_online() -> bool:
            return services.agents.is_online(services.agents.repo.get(agent_id))

        def degraded() -> bool:
            return services.sessions.repo.get(session.id).message != ""

        # One missed beat: just after a beat, the agent stops for a beat and a half.
        seen = services.agents.repo.get(agent_id).last_heartbeat
        assert wait_for(lambda: services.agents.repo.get(agent_id).last_heartbeat != seen)
        stack.agent.stop()
        pause = time.monotonic() + 1.5 * beat
        while time.monotonic() < pause:
            assert agent_online() and not degraded(), "offline on one missed heartbeat"
            time.sleep(0.05)
        assert restarted(stack, agent_id).registered.wait(30)

        # Silent for 60 s (scaled): offline after its grace, by half again.
        stack.agent.stop()
        last = services.agents.repo.get(agent_id).last_heartbeat
        assert wait_for(lambda: not agent_online(), timeout=2 * grace, step=0.05)
        offline_after = (utcnow() - last).total_seconds()
        assert grace <= offline_after <= 1.5 * grace, offline_after
        by = last + timedelta(seconds=1.5 * grace)  # the sweeper has said so by then
        assert wait_for(degraded, timeout=max(0.1, (by - utcnow()).total_seconds()), step=0.05)
        now = services.sessions.repo.get(session.id)
        assert now.state.value == "running" and now.message == f"Agent {agent_id} is offline"
        time.sleep(max(0.0, (last + timedelta(seconds=6 * beat) - utcnow()).total_seconds()))

        restarted(stack, agent_id)
        assert wait_for(agent_online, timeout=beat, step=0.05), "not online within a heartbeat"
        assert wait_for(lambda: not degraded(), timeout=1.5 * grace, step=0.05)
    finally:
        stack.stop()
