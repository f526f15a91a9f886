"""What a request costs as history piles up: a list of live sessions, a get, a create, a
sweep, and pages of every session (the owner's newest, an admin's oldest) with 10, 1,000 and
10,000 terminated sessions in the embedded store, each printed next to the same call with 10
(measured in the same run). Prints figures; asserts only correctness.

Goal (issue 15): at 10,000 each costs at most 1.5x what it costs at 10.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from tether.bus.local import LocalBus
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Role, Session, SessionRequest, Template, utcnow
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.sessions import Sessions
from tether.service.sweeper import RETAINED, purge_expired
from tether.service.templates import Templates
from tether.store.sqlite import SqliteStore

HISTORY = (10, 1_000, 10_000)
ROUNDS = 41
PAGE = 5
ALICE = Principal(id="alice", username="alice", role=Role.USER)
ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


def stack(path: Path, ended: int) -> Sessions:
    store = SqliteStore(path)
    sessions = Sessions(store, Commands(store, LocalBus()), Agents(store), Templates(store))
    sessions.templates.create(Template(name="shell", display_name="Shell"))
    sessions.agents.register("agent-1", "local", "local", capacity=10_000)
    past = utcnow() - timedelta(days=1)
    for i in range(ended):  # ended long ago, some by their TTL, kept for their retention
        sessions.repo.create(f"old-{i}", Session(
            id=f"old-{i}", owner="alice" if i % 2 else "bob", template="shell",
            platform="local", agent_id="agent-1", state=SessionState.TERMINATED,
            expires_at=past, purge_at=utcnow() + timedelta(days=6)))  # fmt: skip
    for i in range(5):
        sessions.repo.create(f"live-{i}", Session(
            id=f"live-{i}", owner="alice", template="shell", platform="local",
            agent_id="agent-1", state=SessionState.RUNNING,
            expires_at=utcnow() + timedelta(hours=1)))  # fmt: skip
    return sessions


def median_ms(call: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def sweep(sessions: Sessions) -> None:
    sessions.expire()
    for kind, field in RETAINED.items():
        purge_expired(sessions.store, [kind], field)


@pytest.mark.timeout(600)
def test_cost_does_not_grow_with_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures: dict[int, dict[str, float]] = {}
    for ended in HISTORY:
        sessions = stack(tmp_path / f"{ended}.db", ended)
        request = SessionRequest(template="shell")
        calls: dict[str, Callable[[], object]] = {
            "list live": lambda s=sessions: s.listed(ALICE),
            # Pages of PAGE, full at every size (alice has 5 live sessions): a page of more
            # than the history holds would compare pages of different sizes.
            "page, all": lambda s=sessions: s.listed(
                ALICE, include_terminated=True, descending=True, limit=PAGE
            ),
            "admin page": lambda s=sessions: s.listed(ADMIN, include_terminated=True, limit=PAGE),
            "get": lambda s=sessions: s.get(ALICE, "live-3"),
            "create": lambda s=sessions, r=request: s.create(ALICE, r, wait=0),
            "sweep": lambda s=sessions: sweep(s),
        }
        figures[ended] = {name: median_ms(call) for name, call in calls.items()}
        assert [s.id for s in sessions.listed(ALICE).items][:5] == [f"live-{i}" for i in range(5)]
        assert len(sessions.repo.query([("state", "==", "terminated")])) == ended
    with capsys.disabled():
        print(f"\ncost with history (embedded store), medians of {ROUNDS} calls:")
        for name in figures[HISTORY[0]]:
            base = figures[HISTORY[0]][name]
            row = "  ".join(
                f"{n:>6}: {figures[n][name]:6.2f} ms ({figures[n][name] / base:4.2f}x)"
                for n in HISTORY
            )
            print(f"  {name:<10} {row}  (goal at 10,000 <= 1.50x)")
