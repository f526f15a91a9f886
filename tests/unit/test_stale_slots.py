"""The sweeper frees a slot a crash left taken (its session ended without giving it back),
looking at a bounded batch of slots a pass and going on where the last pass stopped, and
never frees a slot a running session uses."""

from __future__ import annotations

from pathlib import Path

from tether.bus.local import LocalBus
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Role, Session, SessionRequest, Template
from tether.service.agents import SLOTS, Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions
from tether.service.templates import Templates
from tether.store.sqlite import SqliteStore

ALICE = Principal(id="alice", username="alice", role=Role.USER)


def test_slots_a_crash_left_taken_are_freed_a_batch_a_pass(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tether.db")
    sessions = Sessions(store, Commands(store, LocalBus()), Agents(store), Templates(store))
    sessions.templates.create(Template(name="shell", display_name="Shell"))
    sessions.agents.register("agent-1", "local", "local", capacity=10)
    made = [sessions.create(ALICE, SessionRequest(template="shell"), wait=0) for _ in range(5)]
    assert store.count(SLOTS) == 5

    def ended_without_release(s: Session) -> Session:  # a crash between the two writes
        s.state = SessionState.TERMINATED
        return s

    for crashed in made[::2]:
        sessions.repo.mutate(crashed.id, ended_without_release)
    freed = [sessions.agents.release_stale(batch=2) for _ in range(3)]  # 2 + 2 + 1 slots
    assert sum(freed) == 3 and store.count(SLOTS) == 2
    held = {d.data["session_id"] for d in store.query(SLOTS)}
    assert held == {made[1].id, made[3].id}  # the running sessions keep theirs
    assert [sessions.agents.release_stale(batch=2) for _ in range(2)] == [0, 0]
