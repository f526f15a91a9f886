"""`tether up` as a real subprocess on a free port, driven over HTTP like a user would."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from flask.testing import FlaskClient
from tether.origin.server import Origin

from tests.conftest import emulator

API_KEY = "tether_e2ekey000001_" + "e" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    key: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(home: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "TETHER_PORT": str(port),
        "TETHER_HOME": str(home),
        "TETHER_API_KEY": API_KEY,
        "TETHER_HEARTBEAT_INTERVAL": "1",
        **(extra_env or {}),
    }
    log = home.parent / f"tether-up-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli.main", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=home.parent,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tether up exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, API_KEY, home, env, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"tether up did not answer within 60s:\n{log.read_text()}")


@pytest.fixture(params=["embedded", "cloud"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The embedded default, and the same stack on the Firestore and Pub/Sub emulators."""
    extra: dict[str, str] = {}
    if request.param == "cloud":
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        # A project of its own keeps this server's documents and topics apart on the emulators.
        extra = {
            "TETHER_STORE": "firestore",
            "TETHER_BUS": "pubsub",
            "GOOGLE_CLOUD_PROJECT": f"e2e-{uuid.uuid4().hex[:8]}",
        }
    srv = start_server(tmp_path / "home", extra)
    yield srv
    srv.stop()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "home")
    yield srv
    srv.stop()


@contextmanager
def serving(origin: Origin) -> Iterator[str]:
    """`origin` on a free loopback port, its event loop on a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(origin.start("127.0.0.1", 0), loop).result(10)
    try:
        yield f"http://127.0.0.1:{origin.port}"
    finally:
        asyncio.run_coroutine_threadsafe(origin.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


PUBSUB_KEY = "tether_admin0000001_" + "p" * 32  # the admin key of `onmemos_on_pubsub`'s stack


@pytest.fixture
def onmemos_on_pubsub(tmp_path: Path, project: str, unique: str) -> Iterator[FlaskClient]:
    """OnMemOS's function target over a local stack whose bus is Pub/Sub (the emulator), as in
    the cloud: commands and their results cross it, with their attributes."""
    from tether.bus.pubsub import PubSubBus
    from tether.local.stack import LocalStack
    from tether.settings import Settings
    from tether.store.sqlite import SqliteStore

    from tests.surfaces.conftest import target_client

    settings = Settings(home=tmp_path / "home", api_key=PUBSUB_KEY)
    bus = PubSubBus(project=project, prefix=unique + "-")
    s = LocalStack(settings, sweep_interval=3600, store=SqliteStore(tmp_path / "t.db"), bus=bus)
    s.start()
    try:
        yield target_client("onmemos")
    finally:
        s.stop()
