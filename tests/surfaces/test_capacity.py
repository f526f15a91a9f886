"""An agent's capacity is reserved atomically: any number of creates at once never place more
sessions on it than it can take; the rest are told so (503), and capacity given back (a delete,
a hibernation) is taken again."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tether.core.lifecycle import ACTIVE_SESSION_STATES
from tether.local.stack import LocalStack
from tether.settings import Settings

from tests.surfaces.conftest import ADMIN_KEY, target_client
from tests.waiting import wait_for

CAPACITY = 10
H = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[LocalStack]:
    settings = Settings(home=tmp_path / "home", api_key=ADMIN_KEY, heartbeat_interval=0.5,
                        agent_capacity=CAPACITY,
                        rate_limits={"login": 5, "create": 1000, "api": 10000})  # fmt: skip
    stack = LocalStack(settings, sweep_interval=0.2)
    stack.start()
    yield stack
    stack.stop()


def using_capacity(stack: LocalStack) -> list[str]:
    states = {s.value for s in ACTIVE_SESSION_STATES}
    docs = stack.services.store.query("sessions", [])
    return [d.id for d in docs if d.data.get("state") in states]


def test_200_creates_at_once_never_exceed_an_agents_capacity(small: LocalStack) -> None:
    clients = [target_client("streamspace") for _ in range(200)]  # made here, not in threads

    def create(i: int) -> tuple[int, str]:
        r = clients[i].post(
            "/api/v1/sessions", json={"user": f"u{i}", "template": "shell"}, headers=H
        )
        body = r.get_json()
        return r.status_code, body.get("id") or body.get("code")

    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(create, range(200)))
    placed = [ident for status, ident in answers if status == 202]
    refused = {ident for status, ident in answers if status == 503}
    assert len(placed) == CAPACITY, answers
    assert refused == {"AGENT_CAPACITY_EXCEEDED"}
    assert sorted(using_capacity(small)) == sorted(placed)
    assert small.services.agents.live_sessions(small.agent.agent_id) == CAPACITY

    ss = target_client("streamspace")
    # Given back by a delete, then by a hibernation: taken again by the next create each time.
    gone = placed[0]
    assert ss.delete(f"/api/v1/sessions/{gone}", headers=H).status_code == 204
    assert wait_for(lambda: ss.get(f"/api/v1/sessions/{gone}", headers=H).get_json()["state"]
                    == "terminated", timeout=120)  # fmt: skip
    again = ss.post("/api/v1/sessions", json={"user": "next", "template": "shell"}, headers=H)
    assert again.status_code == 202, again.get_json()
    full = ss.post("/api/v1/sessions", json={"user": "over", "template": "shell"}, headers=H)
    assert full.status_code == 503
    sid = placed[1]
    assert wait_for(lambda: ss.get(f"/api/v1/sessions/{sid}", headers=H).get_json()["state"]
                    == "running", timeout=120)  # fmt: skip
    slept = ss.patch(f"/api/v1/sessions/{sid}", json={"state": "hibernated"}, headers=H)
    assert slept.status_code == 200
    assert wait_for(lambda: ss.get(f"/api/v1/sessions/{sid}", headers=H).get_json()["state"]
                    == "hibernated", timeout=120)  # fmt: skip
    taken = ss.post("/api/v1/sessions", json={"user": "late", "template": "shell"}, headers=H)
    assert taken.status_code == 202
    # Full again: the hibernated one cannot wake until capacity is given back. (On a loaded
    # machine a workspace may have failed to start meanwhile: a failed session holds no
    # capacity, and then the wake takes its place.)
    woke = ss.patch(f"/api/v1/sessions/{sid}", json={"state": "running"}, headers=H)
    failed = [d for d in small.services.store.query("sessions", [("state", "==", "failed")])]
    if not failed:
        assert woke.status_code == 503, woke.get_json()
        assert woke.get_json()["code"] == "AGENT_CAPACITY_EXCEEDED"
    else:
        assert woke.status_code in (200, 503), woke.get_json()
    assert len(using_capacity(small)) <= CAPACITY
