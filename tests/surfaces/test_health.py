"""GET /health tells the truth about each backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from tether import bootstrap
from tether.bus.local import LocalBus
from tether.bus.pubsub import PubSubBus
from tether.local.stack import LocalStack
from tether.settings import Settings, default_capacity
from tether.store.firestore import FirestoreStore
from tether.store.sqlite import SqliteStore

from tests.e2e.conftest import free_port
from tests.surfaces.conftest import target_client

AS_USER = Path(__file__).parents[1] / "sandbox" / "as_user.py"


@pytest.fixture
def dead_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Emulator addresses where nothing listens: the backends are unreachable."""
    host = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    yield host
    bootstrap.install(None)


def test_unreachable_store_and_bus_report_degraded_with_503(dead_port: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, store="firestore", bus="pubsub", project="p")
    built = bootstrap.build(settings, FirestoreStore(project="p"), PubSubBus(project="p"))
    bootstrap.install(built)
    r = target_client("health").get("/health")
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "degraded"
    assert body["store"]["status"] == "unavailable" and body["store"]["backend"] == "firestore"
    assert body["bus"]["status"] == "unavailable" and body["bus"]["backend"] == "pubsub"
    assert body["store"]["error"] and body["bus"]["error"]


def test_one_backend_down_is_still_degraded(dead_port: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, store="sqlite", bus="pubsub", project="p")
    built = bootstrap.build(settings, SqliteStore(tmp_path / "db"), PubSubBus(project="p"))
    bootstrap.install(built)
    body = target_client("health").get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["store"]["status"] == "ok" and body["bus"]["status"] == "unavailable"
    built = bootstrap.build(settings, SqliteStore(tmp_path / "db"), LocalBus())
    bootstrap.install(built)
    assert target_client("health").get("/health").status_code == 200


def test_the_local_stack_reports_what_confines_its_workspaces(
    health_api: FlaskClient, stack: LocalStack
) -> None:
    workspaces = health_api.get("/health").get_json()["workspaces"]
    assert workspaces["sandbox"] == "bubblewrap" and workspaces["egress"] == "slirp4netns"
    if os.geteuid() == 0:  # CI: each workspace its own uid, cgroups and filesystem
        assert workspaces["host_uid"] == "one per workspace"
        assert workspaces["limits"].startswith("cgroup")
        assert workspaces["disk"].startswith("a filesystem of its own")
    else:  # an ordinary user: said plainly, never silently unbounded
        assert workspaces["limits"].startswith("rlimits only: cannot create control groups")
        assert workspaces["disk"].startswith("per file only")
    # and the agent takes as many workspaces as the machine's memory has GiB
    agent = stack.services.agents.repo.get(stack.agent.agent_id)
    assert agent.capacity == stack.settings.agent_capacity == default_capacity()


def test_an_ordinary_users_stack_says_its_limits_are_rlimits_at_start_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("run as an ordinary user already: the test above covers it")
    home = Path(tempfile.gettempdir()) / f"tether-ordinary-{uuid.uuid4().hex}"  # theirs to make
    script = (
        "from pathlib import Path; from tether.provision.local import LocalProvisioner;"
        f"print(LocalProvisioner(Path({str(home)!r})).isolation())"
    )
    try:
        r = subprocess.run(
            [sys.executable, str(AS_USER), "--", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert "workspace limits: rlimits only: cannot create control groups" in r.stderr
    assert "'disk': 'per file only" in r.stdout and "'host_uid': \"the stack's user\"" in r.stdout
