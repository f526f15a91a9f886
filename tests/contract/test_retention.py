"""Cost that does not grow with history, on both stores: the sweeper reads only the sessions
that are due, a terminated session is deleted once its retention has passed (and nothing else
is), and a list leaves history in the store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from tether.bus.local import LocalBus
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Role, Session, utcnow
from tether.core.ports import Store
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions
from tether.service.sweeper import RETAINED, purge_expired
from tether.service.templates import Templates

RETENTION = timedelta(hours=1)


@pytest.fixture
def sessions(store: Store) -> Iterator[Sessions]:
    bus = LocalBus()
    yield Sessions(store, Commands(store, bus), Agents(store), Templates(store), RETENTION)
    bus.close()


def put(sessions: Sessions, sid: str, state: SessionState, **fields: object) -> None:
    session = Session(id=sid, owner="alice", template="shell", platform="local",
                      agent_id="agent-1", state=state, **fields)  # fmt: skip
    sessions.repo.create(sid, session)


def test_the_sweeper_ends_what_is_due_and_purges_only_what_ended_long_ago(
    sessions: Sessions,
) -> None:
    now = utcnow()
    past, future = now - timedelta(minutes=5), now + timedelta(minutes=5)
    put(sessions, "due", SessionState.RUNNING, expires_at=past)
    put(sessions, "hibernated-due", SessionState.HIBERNATED, expires_at=past)
    put(sessions, "not-yet", SessionState.RUNNING, expires_at=future)
    put(sessions, "long-lived", SessionState.RUNNING)
    put(sessions, "ending", SessionState.TERMINATING, expires_at=past)
    put(sessions, "ended-long-ago", SessionState.TERMINATED, expires_at=past, purge_at=past)
    put(sessions, "ended-lately", SessionState.TERMINATED, expires_at=past, purge_at=future)

    assert sorted(sessions.expire()) == ["due", "hibernated-due"]
    assert sessions.expire() == []  # what it ended is not read again
    purged = sum(purge_expired(sessions.store, [k], f) for k, f in RETAINED.items())
    assert purged == 1 and sessions.repo.find("ended-long-ago") is None
    left = {s.id for s in sessions.repo.query()}
    assert left == {"due", "hibernated-due", "not-yet", "long-lived", "ending", "ended-lately"}


def test_a_terminated_session_is_kept_for_the_retention_then_purged(sessions: Sessions) -> None:
    put(sessions, "s1", SessionState.RUNNING)
    ended = sessions.force_terminate("s1")
    assert ended.state is SessionState.TERMINATED and ended.purge_at is not None
    assert ended.purge_at == ended.updated_at + RETENTION
    assert purge_expired(sessions.store, ["sessions"], "purge_at") == 0  # kept for now
    assert sessions.repo.get("s1").state is SessionState.TERMINATED


def test_a_list_of_live_sessions_reads_no_history(sessions: Sessions) -> None:
    for i in range(30):
        put(sessions, f"old-{i:02}", SessionState.TERMINATED)
    put(sessions, "live", SessionState.RUNNING)
    alice = Principal(id="alice", username="alice", role=Role.USER)
    assert [s.id for s in sessions.listed(alice).items] == ["live"]
    every = sessions.listed(alice, include_terminated=True, limit=20)
    assert (len(every.items), every.total) == (20, 31) and every.next_cursor


def test_a_sweep_purges_a_bounded_batch_and_the_next_one_the_rest(sessions: Sessions) -> None:
    past = utcnow() - timedelta(minutes=5)
    for i in range(7):
        put(sessions, f"old-{i}", SessionState.TERMINATED, purge_at=past)
    assert purge_expired(sessions.store, ["sessions"], "purge_at", batch=5) == 5
    assert purge_expired(sessions.store, ["sessions"], "purge_at", batch=5) == 2
    assert sessions.repo.query() == []


def test_a_session_saved_before_idle_times_were_stored_still_hibernates_when_idle(
    sessions: Sessions,
) -> None:
    """The sweeper finds idle sessions by their stored `idle_at`; one saved by an earlier
    version has none until the start-up step stores it."""
    old = Session(id="old", owner="alice", template="shell", platform="local",
                  agent_id="agent-1", state=SessionState.RUNNING, idle_timeout="5m",
                  last_activity=utcnow() - timedelta(hours=1))  # fmt: skip
    doc = old.doc()
    del doc["idle_at"]
    sessions.store.create("sessions", "old", doc)
    assert sessions.hibernate_idle() == []
    assert sessions.store_idle_times() == 1
    assert sessions.store_idle_times() == 0
    assert sessions.hibernate_idle() == ["old"]
