"""The sweeper and agent_events targets, through functions-framework like Cloud Functions."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from pathlib import Path

from tether.core.lifecycle import SessionState
from tether.core.models import utcnow
from tether.local.stack import LocalStack

from tests.surfaces.conftest import ALICE_KEY, target_client


def test_sweeper_target_expires_sessions_and_reports_counts(stack: LocalStack) -> None:
    stack.sweep_interval = 3600  # only the target sweeps here (after the current wait ends)
    time.sleep(0.3)
    api = target_client("onmemos")
    s = api.post("/v1/sessions", json={"template": "shell"}, headers={"X-API-Key": ALICE_KEY})
    sid = s.get_json()["id"]

    def expire(session):  # type: ignore[no-untyped-def]
        session.expires_at = utcnow() - timedelta(minutes=1)
        return session

    stack.services.sessions.repo.mutate(sid, expire)
    r = target_client("sweeper").post("/")
    assert r.status_code == 200
    assert r.get_json()["expired_sessions"] == 1
    ended = stack.services.sessions.wait_while(sid, {SessionState.TERMINATING}, 10)
    assert ended.state.value == "terminated"
    assert not Path(stack.services.sessions.repo.get(sid).details["workdir"]).exists()


def test_agent_events_target_takes_a_pubsub_push(stack: LocalStack) -> None:
    client = target_client("agent_events")
    event = {"type": "register", "agent_id": "run-agent-1", "platform": "cloud_run",
             "region": "us-central1", "capacity": 3}  # fmt: skip
    r = client.post(
        "/",
        json={"message": {"data": base64.b64encode(json.dumps(event).encode()).decode(),
                          "messageId": "1", "attributes": {"type": "register"}},
              "subscription": "projects/p/subscriptions/agent-events-push"},
        headers={
            "ce-id": "1",
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/agent-events",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-specversion": "1.0",
        },
    )  # fmt: skip
    assert r.status_code == 200, r.data
    agent = stack.services.agents.repo.get("run-agent-1")
    assert (agent.platform, agent.region, agent.capacity) == ("cloud_run", "us-central1", 3)
    assert stack.services.agents.is_online(agent)


def test_sweeper_drops_expired_tickets_revocations_and_rate_windows(stack: LocalStack) -> None:
    stack.sweep_interval = 3600
    time.sleep(0.3)
    store = stack.services.store
    past, future = utcnow() - timedelta(seconds=1), utcnow() + timedelta(minutes=1)
    for kind in ("tickets", "revoked_tokens", "rate_limits"):
        store.create(kind, "old", {"expires_at": past})
        store.create(kind, "new", {"expires_at": future})
    assert target_client("sweeper").post("/").get_json()["expired_records"] == 3
    for kind in ("tickets", "revoked_tokens", "rate_limits"):
        assert store.get(kind, "old") is None and store.get(kind, "new") is not None
