"""GET /health tells the truth about each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tether import bootstrap
from tether.bus.local import LocalBus
from tether.bus.pubsub import PubSubBus
from tether.settings import Settings
from tether.store.firestore import FirestoreStore
from tether.store.sqlite import SqliteStore

from tests.e2e.conftest import free_port
from tests.surfaces.conftest import target_client


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
