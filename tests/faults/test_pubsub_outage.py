"""Pub/Sub unreachable (a TCP proxy in front of the emulator, cut): commands issued meanwhile
are accepted, recorded, and each has one effect once Pub/Sub is back, published again by the
sweeper where their first publish failed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tether.bus.pubsub import PubSubBus
from tether.core.lifecycle import FINAL_COMMAND_STATES, CommandState
from tether.core.models import Principal, Role, SessionRequest
from tether.local.stack import LocalStack
from tether.settings import Settings
from tether.store.sqlite import SqliteStore

from tests.conftest import emulator
from tests.fakes.faultproxy import FaultProxy
from tests.waiting import wait_for

OUTAGE = float(os.environ.get("TETHER_FAULT_OUTAGE", "20"))
DELIVERED_WITHIN = 60.0  # seconds after Pub/Sub's return
ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


@pytest.fixture
def stack(
    tmp_path: Path, project: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalStack, FaultProxy]]:
    proxy = FaultProxy(emulator("PUBSUB_EMULATOR_HOST"))
    # Pub/Sub's clients read where the emulator is when they are made (lazily, on first use).
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.start())
    settings = Settings(home=tmp_path / "home", api_key="tether_admin0000001_" + "p" * 32)
    bus = PubSubBus(project=project, prefix=unique + "-")
    s = LocalStack(settings, sweep_interval=3600, store=SqliteStore(tmp_path / "t.db"), bus=bus)
    s.start()
    try:
        yield s, proxy
    finally:
        proxy.restore()
        s.stop()
        proxy.stop()


def test_commands_issued_while_pubsub_is_away_each_run_once_after_it_returns(
    stack: tuple[LocalStack, FaultProxy],
) -> None:
    s, proxy = stack
    sessions, commands = s.services.sessions, s.services.commands
    session = sessions.create(ADMIN, SessionRequest(template="shell"), wait=60)
    assert session.state.value == "running", session.message
    ledger = Path(session.details["workdir"]) / "ledger"

    cut = time.monotonic()
    proxy.cut()
    with ThreadPoolExecutor(5) as pool:  # five callers at once, each answered, none refused
        issued = list(pool.map(
            lambda n: sessions.submit(ADMIN, session.id, f"echo {n} >> ledger", 30), range(5)
        ))  # fmt: skip
    assert all(c.state is CommandState.PENDING for c in issued)
    time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage's length
    back = time.monotonic()
    proxy.restore()

    def delivered() -> bool:
        s.services.sweeper.run()  # as Cloud Scheduler runs it: publishes again what is pending
        return all(commands.repo.get(c.id).state in FINAL_COMMAND_STATES for c in issued)

    assert wait_for(delivered, timeout=DELIVERED_WITHIN, step=1.0), "a command was lost"
    took = time.monotonic() - back
    assert {commands.repo.get(c.id).state for c in issued} == {CommandState.SUCCEEDED}
    # One effect each, however often Pub/Sub or the sweeper delivered it.
    assert sorted(ledger.read_text().split()) == [str(n) for n in range(5)]
    print(f"\n5 commands issued in a {back - cut:.1f}s Pub/Sub outage ran once each, "
          f"{took:.1f}s after its return")  # fmt: skip
