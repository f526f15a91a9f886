"""Creates during a Firestore outage leave the store consistent.

StreamSpace's create (over loopback HTTP, through functions-framework) writes a session, then
its start command (the outbox). Creates go on before, during and after a cut of Firestore
(the TCP proxy of test_firestore_outage.py); half carry an `Idempotency-Key` and are sent
again by the client after each 503, as a client following Retry-After does.

The contract, once Firestore is back and the sweeper has passed:
- every session has its start command, and every command its session;
- a create answered 2xx made exactly one session;
- a create answered 503 promised nothing: it made no session, or one (its write went through,
  or the outage came after it) that has its start command like any other, the sweeper issuing
  it if the create could not;
- a create sent again with its Idempotency-Key after a 503 made exactly one session, however
  far the first attempt got.
Every session is started in the end: the local agent runs each (running)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from tether.bus.local import LocalBus
from tether.local.stack import LocalStack
from tether.service.sessions import start_command
from tether.settings import RATE_LIMITS, Settings
from tether.store.firestore import FirestoreStore

from tests.conftest import emulator
from tests.fakes.faultproxy import FaultProxy
from tests.fakes.served import ServedTarget
from tests.waiting import wait_for

OUTAGE = float(os.environ.get("TETHER_FAULT_OUTAGE", "12"))
KEY = "tether_admin0000001_" + "c" * 32
CREATED = 202  # StreamSpace's answer to a create
RETRY_FOR = 60.0  # a keyed create is sent again for this long after its first attempt
BURST = 8  # creates at once, in flight when the cut comes


@dataclass
class Create:
    user: str  # each create's own: how its session is found in the store
    keyed: bool
    asked: float  # its first attempt's start (monotonic)
    statuses: list[int] = field(default_factory=list)  # each attempt's answer, in order
    answered: float = 0.0  # when its last attempt was answered
    first_answered: datetime | None = None  # when its first attempt was (wall clock)

    @property
    def status(self) -> int:
        return self.statuses[-1] if self.statuses else 0


@dataclass
class Outage:
    proxy: FaultProxy
    store: FirestoreStore
    stack: LocalStack
    url: str
    direct: firestore.Client  # the emulator itself, past the proxy


@pytest.fixture
def outage(tmp_path: Path, project: str, unique: str, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Outage]:  # fmt: skip
    proxy = FaultProxy(emulator("FIRESTORE_EMULATOR_HOST"))
    direct = firestore.Client(project=project)  # made before the variable names the proxy
    # Firestore's client reads where the emulator is when it is made (lazily, on first use).
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.start())
    store = FirestoreStore(project=project, prefix=unique + "_")
    # Creates beyond StreamSpace's 10 a minute: what is tested is the outage, not the limit.
    limits = {**RATE_LIMITS, "create": 1000}
    settings = Settings(home=tmp_path / "home", api_key=KEY, agent_capacity=64, rate_limits=limits)
    # The sweeper runs every second, as Cloud Scheduler would call it (more often here).
    stack = LocalStack(settings, sweep_interval=1.0, store=store, bus=LocalBus())
    stack.start()
    served = ServedTarget("streamspace")
    try:
        yield Outage(proxy, store, stack, served.url + "/api/v1/sessions", direct)
    finally:
        served.stop()
        proxy.restore()
        stack.stop()
        proxy.stop()
        direct.close()  # type: ignore[no-untyped-call]


def _time(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def send(client: httpx.Client, url: str, create: Create) -> None:
    """One create; a keyed one is sent again after a 503 (or a 409 saying its first attempt
    still runs), as told by Retry-After, until it gets another answer."""
    headers = {"Authorization": f"Bearer {KEY}"}
    if create.keyed:
        headers["Idempotency-Key"] = create.user + "-key"
    body = {"user": create.user, "template": "shell"}
    while True:
        r = client.post(url, json=body, headers=headers)
        create.statuses.append(r.status_code)
        create.answered = time.monotonic()
        create.first_answered = create.first_answered or datetime.now(UTC)
        again = r.status_code == 503 or (
            r.status_code == 409 and r.json().get("code") == "IDEMPOTENCY_KEY_IN_USE"
        )
        if not (create.keyed and again) or time.monotonic() > create.asked + RETRY_FOR:
            return
        time.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))  # as told


def test_creates_during_an_outage_leave_sessions_and_commands_consistent(
    outage: Outage, unique: str
) -> None:
    creates: list[Create] = []
    threads: list[threading.Thread] = []
    numbers = itertools.count()
    client = httpx.Client(timeout=100)

    def launch(count: int) -> list[Create]:
        """`count` creates at once, every other one keyed."""
        made = []
        for _ in range(count):
            n = next(numbers)
            made.append(Create(f"{unique}-c{n:03d}", keyed=n % 2 == 0, asked=time.monotonic()))
            threads.append(threading.Thread(target=send, args=(client, outage.url, made[-1])))
            threads[-1].start()
        creates.extend(made)
        return made

    def written(users: list[str]) -> bool:  # read past the proxy
        where = FieldFilter("user", "in", users)
        return bool(outage.direct.collection(f"{unique}_sessions").where(filter=where).get())

    try:
        before = launch(2)
        assert wait_for(lambda: all(c.statuses for c in before), 60)
        burst = launch(BURST)
        users = [c.user for c in burst]
        # The cut comes as the burst's first session is written: the others at every step.
        assert wait_for(lambda: written(users), 60, 0.005)
        cut = time.monotonic()
        outage.proxy.cut()
        during = launch(2)
        assert wait_for(lambda: all(c.statuses for c in during), OUTAGE + 60)
        time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage's length
        back = time.monotonic()
        outage.proxy.restore()
        after = launch(2)
        assert wait_for(lambda: all(c.statuses for c in after), 60)
    finally:
        for thread in threads:
            thread.join(RETRY_FOR + 100)
        client.close()
    assert [c.status for c in before + after] == [CREATED] * 4, before + after

    ours = {c.user: c for c in creates}

    def records() -> tuple[dict[str, list[dict[str, object]]], dict[str, dict[str, object]]]:
        sessions: dict[str, list[dict[str, object]]] = {}
        for doc in outage.store.query("sessions", []):
            sessions.setdefault(str(doc.data["user"]), []).append({"id": doc.id, **doc.data})
        commands = {doc.id: doc.data for doc in outage.store.query("commands", [])}
        return sessions, commands

    def settled() -> bool:  # every session started, by its create or by the sweeper
        sessions, commands = records()
        return all(
            start_command(str(s["id"])) in commands and s["state"] == "running"
            for found in sessions.values()
            for s in found
        )

    settled_in = wait_for(settled, 60, 0.5)
    sessions, commands = records()
    by_status = Counter((c.keyed, tuple(c.statuses)) for c in creates)
    # Creates whose first answer was a 503 although their session was written before it.
    hidden = [c for c in creates if c.statuses[0] == 503 and any(
        _time(s["created_at"]) < (c.first_answered or _time(s["created_at"]))
        for s in sessions.get(c.user, []))]  # fmt: skip

    def late(s: dict[str, object]) -> bool:  # its start command came long after it
        command = commands.get(start_command(str(s["id"])))
        return (
            command is not None
            and (_time(command["created_at"]) - _time(s["created_at"])).total_seconds() > 5
        )

    swept = [s for found in sessions.values() for s in found if late(s)]
    print(f"\n{len(creates)} creates in a {back - cut:.1f}s outage: "
          + ", ".join(f"{'keyed ' if k else ''}{list(s)} x{n}" for (k, s), n in by_status.items())
          + f"; {sum(map(len, sessions.values()))} sessions; {len(hidden)} answered 503 after "
          f"their session was written ({sum(c.keyed for c in hidden)} keyed); "
          f"{len(swept)} given their start command late (by the sweeper or a retry)")  # fmt: skip

    assert set(sessions) <= set(ours), "a session no create asked for"
    ids = {str(s["id"]) for found in sessions.values() for s in found}
    for command_id, command in commands.items():
        session_id = command.get("session_id")
        assert session_id is None or session_id in ids, f"{command_id} without its session"
    for user, found in sessions.items():
        for s in found:
            assert start_command(str(s["id"])) in commands, f"{user}'s session without its command"
    for c in creates:
        made = len(sessions.get(c.user, []))
        assert c.status in (CREATED, 503), c
        if c.status == CREATED:
            assert made == 1, f"a create answered {CREATED} made {made} sessions: {c}"
        else:
            assert not c.keyed, f"a keyed create still failing after {RETRY_FOR}s: {c}"
            assert made <= 1, f"a create answered 503 made {made} sessions: {c}"
    assert settled_in, {
        user: [(s["id"], s["state"]) for s in found]
        for user, found in sessions.items()
        if any(s["state"] != "running" for s in found)
    }
