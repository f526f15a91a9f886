"""The Firestore emulator's process killed (SIGKILL, the whole process group) and a new one
started on the same port: `/health` says degraded while it is away, answering 503 quickly and
never 500, and healthy again within seconds of the new one's start, with Tether not restarted.

Unlike the proxy cut (test_firestore_outage.py) the port itself goes away: a connection is
refused, not dropped, so this is what gRPC's reconnect backoff meets after a crashed backend.
The emulator here is this test's own, on a free port; the suite's shared one runs on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.bus.local import LocalBus
from tether.errors import Unavailable
from tether.local.stack import LocalStack
from tether.settings import Settings
from tether.store.firestore import RECONNECT, FirestoreStore

from tests.fakes.served import ServedTarget
from tests.waiting import wait_for

# How long the emulator stays dead before its restart begins: long enough for gRPC's reconnect
# backoff to have grown (with its defaults, to several seconds between attempts).
DEAD = float(os.environ.get("TETHER_FAULT_DEAD", "30"))
RECOVERY = 15.0  # seconds after the new emulator answers by which /health is healthy
ANSWER_BOUND = 8.0  # no /health call takes longer, whatever the emulator is doing
START_TIMEOUT = 90.0  # a JVM's start on a loaded machine
KEY = "tether_admin0000001_" + "e" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """A Firestore emulator process of the test's own, started as `infra/emulators.sh` starts
    the suite's (a session of its own, so its wrapper and its JVM are one process group)."""

    def __init__(self, port: int, logs: Path) -> None:
        self.host = f"127.0.0.1:{port}"
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def answers(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> float:
        """Starts it and waits until it answers; returns when it did (monotonic)."""
        self.starts += 1
        log = (self.logs / f"firestore-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            ["gcloud", "emulators", "firestore", "start", "--quiet", f"--host-port={self.host}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc = self.proc
        started = wait_for(lambda: proc.poll() is not None or self.answers(), START_TIMEOUT, 0.1)
        assert started and proc.poll() is None, self.log_tail()
        return time.monotonic()

    def kill(self) -> None:
        """SIGKILL to the whole group (no orphaned JVM keeps the port); waits until the port
        refuses connections."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        assert wait_for(lambda: not self.listening(), 30, 0.05), "the killed emulator's port"

    def group_gone(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    def listening(self) -> bool:
        host, _, port = self.host.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return False
        return True

    def log_tail(self) -> str:
        return "".join(p.read_text(errors="replace")[-2000:] for p in self.logs.glob("*.log"))


@dataclass
class Answer:
    at: float  # when it was asked (monotonic)
    took: float
    status: int  # 0: no answer (an httpx error)
    body: Any


def poll(url: str, stop: threading.Event, answers: list[Answer]) -> None:
    with httpx.Client(timeout=ANSWER_BOUND + 20) as client:
        while not stop.is_set():
            at = time.monotonic()
            try:
                r = client.get(url + "/health")
                json = r.headers.get("Content-Type", "").startswith("application/json")
                status, body = r.status_code, (r.json() if json else r.text)
            except httpx.HTTPError as exc:
                status, body = 0, repr(exc)
            answers.append(Answer(at, time.monotonic() - at, status, body))
            stop.wait(0.05)


@pytest.fixture
def own_emulator(tmp_path: Path) -> Iterator[Emulator]:
    logs = tmp_path / "emulator"
    logs.mkdir()
    emulator = Emulator(free_port(), logs)
    try:
        emulator.start()
        yield emulator
    finally:
        emulator.kill()


def test_health_is_degraded_while_the_emulator_is_dead_and_healthy_soon_after_its_restart(
    own_emulator: Emulator, tmp_path: Path, project: str, unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Firestore's client reads where the emulator is when it is made (lazily, on first use).
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", own_emulator.host)
    store = FirestoreStore(project=project, prefix=unique + "_")
    stack = LocalStack(
        Settings(home=tmp_path / "home", api_key=KEY),
        sweep_interval=3600,
        store=store,
        bus=LocalBus(),
    )
    stack.start()
    served = ServedTarget("health")
    answers: list[Answer] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(served.url, stop, answers))
    poller.start()
    try:
        assert wait_for(lambda: any(a.status == 200 for a in answers), 60)
        assert own_emulator.proc is not None
        pgid = own_emulator.proc.pid
        own_emulator.kill()
        dead = time.monotonic()
        assert wait_for(lambda: own_emulator.group_gone(pgid), 10), "a killed process lives on"
        # Answers while it is dead (each checked below: degraded, none hanging).
        assert wait_for(lambda: sum(a.at > dead for a in answers) >= 3, 30)
        time.sleep(max(0.0, dead + DEAD - time.monotonic()))  # the outage's length
        restarting = time.monotonic()
        ready = own_emulator.start()

        def healthy() -> bool:  # two 200s in a row asked after the new emulator answered
            return [a.status for a in answers if a.at > ready][-2:] == [200, 200]

        stayed = wait_for(healthy, RECOVERY + 30, 0.05)
        recovered = min(
            (a.at + a.took for a in answers if a.at > ready and a.status == 200), default=None
        )
    finally:
        stop.set()
        poller.join(60)
        served.stop()
        stack.stop()

    down = [a for a in answers if a.at > dead and a.at + a.took < restarting]
    healed = f"{recovered - ready:.1f}s after the new emulator answered" if recovered else "never"
    print(f"\n/health: {len(down)} answers while the emulator was dead, "
          f"{ready - restarting:.1f}s to start a new one, slowest answer "
          f"{max(a.took for a in answers):.2f}s; healthy {healed}")  # fmt: skip
    assert [a for a in answers if a.status not in (200, 503)] == [], "neither healthy nor degraded"
    assert max(a.took for a in answers) < ANSWER_BOUND, "a /health call hung"
    for a in down:
        assert a.status == 503, a
        assert a.body["status"] == "degraded" and a.body["store"]["status"] == "unavailable", a
    assert recovered is not None, "never healthy again after the emulator's restart"
    assert recovered - ready < RECOVERY, f"healthy {recovered - ready:.1f}s after the restart"
    assert stayed, "healthy, then not"


def test_a_cloud_client_keeps_the_librarys_channel_options_and_adds_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same backoff in the cloud, where the client makes a secure channel of its own."""
    from google.api_core import grpc_helpers

    made: list[tuple[str, list[tuple[str, Any]]]] = []
    real = grpc_helpers.create_channel

    def recording(host: str, **kwargs: Any) -> Any:  # the library's, noting what it is asked
        made.append((host, list(kwargs.get("options") or ())))
        return real(host, **kwargs)

    monkeypatch.setattr(grpc_helpers, "create_channel", recording)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    credentials = tmp_path / "adc.json"  # a user's, never used for real: no call gets through
    credentials.write_text(
        '{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}'
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    store = FirestoreStore(project="acme-prod")
    try:
        with pytest.raises(Unavailable):
            store.ping()
    finally:
        store.close()
    [(host, options)] = made
    assert host == "firestore.googleapis.com"
    assert set(RECONNECT) <= set(options)
    assert ("grpc.keepalive_time_ms", 30000) in options  # the library's own
