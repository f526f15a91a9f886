"""A session's agent falls silent: its session stays, work for it is refused at once with a
503 that says when to try again, and it is served again as soon as the agent is back."""

from __future__ import annotations

from flask.testing import FlaskClient
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.local.stack import LocalStack
from tether.service.commands import PENDING_KEPT
from tether.store.sqlite import SqliteStore

from tests.bodies import sans_id
from tests.surfaces.test_onmemos import create, h
from tests.waiting import wait_for


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

    # The agent comes back (restarted: it registers, then beats).
    stack.agent = Agent(
        agent_id,
        services.bus,
        stack.provisioner,
        Journal(SqliteStore(stack.settings.home / "agent" / "journal.db"), keep=PENDING_KEPT),
        heartbeat_interval=stack.settings.heartbeat_interval,
    )
    stack.agent.start()
    assert stack.agent.registered.wait(30)

    def served() -> bool:
        r = api.post(execute, json={"command": "echo after"}, headers=h())
        return r.status_code == 200 and r.get_json()["stdout"] == "after\n"

    assert wait_for(served, timeout=10), "still refused once the agent was back"
    services.sweeper.run()
    assert services.sessions.repo.get(s["id"]).message == ""
