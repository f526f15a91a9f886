"""Firestore unreachable under steady mixed load: the function targets, served over loopback
HTTP, answer 503 with Retry-After in each surface's shape and never 500; `/health` says
degraded; all of it recovers by itself once Firestore is back, without a restart.

The outage lasts TETHER_FAULT_OUTAGE seconds (`make soak` runs the 30 s one; the suite a
shorter one, long enough for every call to meet it)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.bus.local import LocalBus
from tether.local.stack import LocalStack
from tether.settings import Settings
from tether.store.firestore import FirestoreStore

from tests.conftest import emulator
from tests.fakes.faultproxy import FaultProxy
from tests.fakes.served import ServedTarget
from tests.waiting import wait_for

OUTAGE = float(os.environ.get("TETHER_FAULT_OUTAGE", "12"))
RECOVERY = 10.0  # seconds after Firestore's return by which errors stop
KEY = "tether_admin0000001_" + "f" * 32
# (target, path, headers): what the load calls, round after round.
CALLS = (
    ("onmemos", "/v1/sessions", {"X-API-Key": KEY}),
    ("streamspace", "/api/v1/sessions", {"Authorization": f"Bearer {KEY}"}),
    ("kubently", "/audit", {"X-API-Key": KEY}),
    ("health", "/health", {}),
)


@dataclass
class Answer:
    at: float
    target: str
    status: int
    retry_after: str | None
    body: Any


@pytest.fixture
def outage(
    tmp_path: Path, project: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultProxy, dict[str, ServedTarget]]]:
    proxy = FaultProxy(emulator("FIRESTORE_EMULATOR_HOST"))
    # Firestore's client reads where the emulator is when it is made (lazily, on first use).
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.start())
    store = FirestoreStore(project=project, prefix=unique + "_")
    settings = Settings(home=tmp_path / "home", api_key=KEY)
    stack = LocalStack(settings, sweep_interval=3600, store=store, bus=LocalBus())
    stack.start()
    served = {name: ServedTarget(name) for name, _, _ in CALLS}
    try:
        yield proxy, served
    finally:
        for target in served.values():
            target.stop()
        proxy.restore()
        stack.stop()
        proxy.stop()


def load(
    served: dict[str, ServedTarget],
    stop: threading.Event,
    answers: list[Answer],
    asking: dict[int, tuple[str, float]],
) -> None:
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            for name, path, headers in CALLS:
                asking[threading.get_ident()] = (name, time.monotonic())
                r = client.get(served[name].url + path, headers=headers)
                json = r.headers.get("Content-Type", "").startswith("application/json")
                answers.append(Answer(time.monotonic(), name, r.status_code,
                                      r.headers.get("Retry-After"),
                                      r.json() if json else r.text))  # fmt: skip


def test_an_outage_is_503_with_retry_after_never_500_and_heals_itself(
    outage: tuple[FaultProxy, dict[str, ServedTarget]],
) -> None:
    proxy, served = outage
    answers: list[Answer] = []
    stop = threading.Event()
    asking: dict[int, tuple[str, float]] = {}  # each load thread's call under way, since when
    workers = [
        threading.Thread(target=load, args=(served, stop, answers, asking)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        assert wait_for(lambda: {a.target for a in answers if a.status == 200} == set(served))
        cut = time.monotonic()
        proxy.cut()
        # Every kind of call meets the outage at least once, however slow the machine.
        assert wait_for(
            lambda: {a.target for a in answers if a.status == 503 and a.at > cut} == set(served),
            timeout=OUTAGE + 60,
        ), f"a surface never noticed the outage: under way {asking}, now {time.monotonic()}"
        time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage's length
        back = time.monotonic()
        proxy.restore()

        def healed() -> bool:  # every kind answers 200 twice after its last error
            after = [a for a in answers if a.at > back]
            return all(
                [a.status for a in after if a.target == name][-2:] == [200, 200] for name in served
            )

        assert wait_for(healed, timeout=RECOVERY + 30), "errors went on after Firestore's return"
    finally:
        stop.set()
        for worker in workers:
            worker.join(90)

    assert [a for a in answers if a.status >= 500 and a.status != 503] == [], "a 500"
    failed = [a for a in answers if a.status != 200]
    assert {a.status for a in failed} == {503}, {(a.target, a.status) for a in failed}
    for a in failed:
        assert a.retry_after is not None and int(a.retry_after) >= 1, a
        if a.target == "onmemos":  # FastAPI's shape
            assert set(a.body) == {"detail", "request_id"} and "firestore" in a.body["detail"], (
                a.body
            )
        elif a.target == "streamspace":  # its own, with a code
            assert a.body["code"] and a.body["message"] and a.body["request_id"], a.body
        elif a.target == "kubently":
            assert a.body["detail"] and a.body["details"]["code"], a.body
        else:
            assert a.body["status"] == "degraded" and a.body["store"]["status"] == "unavailable"
    # Errors stop within RECOVERY seconds of the return (a call under way then may still fail).
    last_error = max(a.at for a in failed)
    print(f"\n{len(answers)} calls, {len(failed)} answered 503 in a {back - cut:.1f}s outage; "
          f"errors ended {last_error - back:.1f}s after the return")  # fmt: skip
    assert last_error - back < RECOVERY, f"errors for {last_error - back:.1f}s after the return"
