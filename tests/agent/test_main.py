"""`python -m tether.agent` as a process of its own, as the GKE Deployment runs it: it pulls
from its subscription on the Pub/Sub emulator and keeps its journal in the Firestore emulator,
next to a control plane it shares nothing with but the store and the bus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tether import bootstrap
from tether.core.models import Principal, Role, SessionRequest
from tether.settings import Settings

from tests.conftest import emulator
from tests.contract.conftest import clear_firestore
from tests.e2e.conftest import free_port

ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


@pytest.fixture
def agent_process(tmp_path: Path, project: str) -> Iterator[tuple[str, int]]:
    emulator("FIRESTORE_EMULATOR_HOST")
    emulator("PUBSUB_EMULATOR_HOST")
    agent_id = "pull-" + tmp_path.name[-8:].lower().replace("_", "-")
    port = free_port()
    env = {**os.environ, "TETHER_STORE": "firestore", "TETHER_BUS": "pubsub", "PORT": str(port),
           "TETHER_AGENT_ID": agent_id, "TETHER_HOME": str(tmp_path / "agent"),
           "TETHER_HEARTBEAT_INTERVAL": "1", "GOOGLE_CLOUD_PROJECT": project}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "tether.agent"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield agent_id, port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert f"Tether agent {agent_id} (local, pull)" in out, out
        clear_firestore(project)


def test_a_separate_agent_process_runs_sessions(
    agent_process: tuple[str, int], tmp_path: Path, project: str
) -> None:
    agent_id, port = agent_process
    settings = Settings(home=tmp_path / "control", store="firestore", bus="pubsub",
                        project=project)  # fmt: skip
    services = bootstrap.build(settings)
    events = services.bus.subscribe_events(
        "control-plane", lambda m: services.events.handle(m.data)
    )
    try:
        bootstrap.seed(services)
        deadline = time.monotonic() + 30  # it registers once its process is up
        while services.agents.repo.find(agent_id) is None:
            assert time.monotonic() < deadline, "the agent process never registered"
            time.sleep(0.2)
        session = services.sessions.create(ADMIN, SessionRequest(template="shell"))
        assert session.agent_id == agent_id and session.state.value == "running"
        assert services.sessions.execute(ADMIN, session.id, "echo pulled", 10).stdout == "pulled\n"
        assert services.sessions.delete(ADMIN, session.id).state.value == "terminated"
        # The kubelet's probes: a pulling agent still answers /health.
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200 and health.json()["agent_id"] == agent_id
    finally:
        events.close()
        services.close()


def test_help_names_the_settings() -> None:
    out = subprocess.run([sys.executable, "-m", "tether.agent", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "TETHER_PLATFORM" in out and "--transport" in out
