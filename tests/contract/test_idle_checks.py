"""Idle hibernation asks first, on both stores: the sweeper asks the agent of a session due
(once, until the answer), and the answer (the workspace's own report) either moves the session's
activity on, showing what kept it, or hibernates it. The workspace's words are a claim: a time
in the future is taken as now, nonsense as silence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from tether.bus.local import LocalBus
from tether.core.lifecycle import SessionState
from tether.core.models import Command, CommandType, Session, utcnow
from tether.core.ports import Store
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions
from tether.service.templates import Templates


@pytest.fixture
def sessions(store: Store) -> Iterator[Sessions]:
    bus = LocalBus()
    yield Sessions(store, Commands(store, bus), Agents(store), Templates(store))
    bus.close()


def idle_since(sessions: Sessions, sid: str, minutes: float) -> datetime:
    """A running session with a 5 minute idle timeout, last active `minutes` ago."""
    last = utcnow() - timedelta(minutes=minutes)
    session = Session(id=sid, owner="alice", template="shell", platform="local",
                      agent_id="agent-1", state=SessionState.RUNNING, idle_timeout="5m",
                      last_activity=last)  # fmt: skip
    sessions.repo.create(sid, session)
    return last


def asked(sessions: Sessions, sid: str) -> Command:
    """The idle check the sweep sent about `sid` (there is one)."""
    [check] = [
        c
        for c in sessions.commands.repo.query([("session_id", "==", sid)])
        if c.type is CommandType.CHECK_IDLE
    ]
    return check


def answer(sessions: Sessions, sid: str, activity: Any, ok: bool = True) -> Session:
    check = asked(sessions, sid)
    done = sessions.commands.finished(
        check.id, check.epoch, ok, {"activity": activity} if ok else None, None if ok else "no"
    )
    assert done is not None
    sessions.idle_checked(done)
    return sessions.repo.get(sid)


def test_a_due_session_is_asked_about_once_until_the_answer(sessions: Sessions) -> None:
    idle_since(sessions, "due", 10)
    idle_since(sessions, "not-due", 1)
    assert sessions.hibernate_idle() == ["due"]
    assert sessions.hibernate_idle() == []  # the answer is awaited
    assert sessions.repo.get("due").state is SessionState.RUNNING  # running meanwhile
    answer(sessions, "due", {"busy": True, "running": {"execs": 0, "processes": 1}})
    assert sessions.hibernate_idle() == []  # active now: due again in 5 minutes


def test_a_busy_workspace_is_active_now_and_shows_what_runs(sessions: Sessions) -> None:
    before = utcnow()
    idle_since(sessions, "proc", 10)
    idle_since(sessions, "exec", 10)
    sessions.hibernate_idle()
    kept = answer(sessions, "proc", {"busy": True, "running": {"execs": 0, "processes": 2}})
    assert kept.state is SessionState.RUNNING and kept.last_activity_source == "process"
    assert kept.last_activity >= before and kept.idle_check_at is None
    running = {"execs": 1, "processes": 2}
    kept = answer(sessions, "exec", {"busy": True, "running": running})
    assert kept.last_activity_source == "exec"  # what the API started comes first


def test_work_after_the_last_activity_seen_counts_from_when_it_was(sessions: Sessions) -> None:
    idle_since(sessions, "typed", 10)
    idle_since(sessions, "typed-long-ago", 10)
    sessions.hibernate_idle()
    typed = utcnow() - timedelta(minutes=1)
    report = {"busy": False, "last_activity_at": typed.isoformat(),
              "last_activity_source": "terminal"}  # fmt: skip
    kept = answer(sessions, "typed", report)
    assert kept.state is SessionState.RUNNING
    assert (kept.last_activity, kept.last_activity_source) == (typed, "terminal")
    # Later than what was seen, but still longer ago than the timeout: idle after all.
    report["last_activity_at"] = (utcnow() - timedelta(minutes=7)).isoformat()
    slept = answer(sessions, "typed-long-ago", report)
    assert slept.state is SessionState.HIBERNATING
    assert slept.last_activity_source == "terminal"  # why it lived the two minutes more


def test_an_idle_silent_or_failed_check_hibernates(sessions: Sessions) -> None:
    last = idle_since(sessions, "idle", 10)
    idle_since(sessions, "silent", 10)
    idle_since(sessions, "nonsense", 10)
    idle_since(sessions, "failed", 10)
    sessions.hibernate_idle()
    earlier = {"busy": False, "last_activity_at": (last - timedelta(minutes=1)).isoformat(),
               "last_activity_source": "files"}  # fmt: skip
    slept = answer(sessions, "idle", earlier)
    assert slept.state is SessionState.HIBERNATING and slept.last_activity == last
    assert answer(sessions, "silent", None).state is SessionState.HIBERNATING
    nonsense = {"busy": "very", "running": [1]}
    assert answer(sessions, "nonsense", nonsense).state is SessionState.HIBERNATING
    assert answer(sessions, "failed", None, ok=False).state is SessionState.HIBERNATING
    hibernations = [
        c
        for c in sessions.commands.repo.query([("session_id", "==", "idle")])
        if c.type is CommandType.HIBERNATE_SESSION
    ]
    assert len(hibernations) == 1
    sessions.idle_checked(asked(sessions, "idle"))  # the same answer again: nothing more
    assert len([c for c in sessions.commands.repo.query([("session_id", "==", "idle")])]) == 2


def test_a_time_in_the_future_is_taken_as_now(sessions: Sessions) -> None:
    idle_since(sessions, "boastful", 10)
    sessions.hibernate_idle()
    future = {"last_activity_at": (utcnow() + timedelta(days=365)).isoformat(),
              "last_activity_source": "port"}  # fmt: skip
    kept = answer(sessions, "boastful", future)
    assert kept.state is SessionState.RUNNING
    assert kept.last_activity <= utcnow() and kept.idle_at is not None
    assert kept.idle_at <= utcnow() + timedelta(minutes=5)


def test_activity_while_asking_keeps_it_whatever_the_answer(sessions: Sessions) -> None:
    idle_since(sessions, "touched", 10)
    sessions.hibernate_idle()
    sessions.touch(sessions.repo.get("touched"), "api")  # a call meanwhile
    kept = answer(sessions, "touched", None)
    assert kept.state is SessionState.RUNNING and kept.last_activity_source == "api"
