"""Every port's contract suite runs against every adapter: parametrised fixtures below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.core.ports import Bus, Store
from tether.store.indexes import ASCENDING, COMPOSITE_INDEXES, DESCENDING, Index

from tests.conftest import emulator

# The store contract's own queries need one index more than the services do.
CONTRACT_INDEXES = (
    *COMPOSITE_INDEXES,
    Index("sessions", (("state", ASCENDING), ("created_at", DESCENDING))),
)


def clear_firestore(project: str) -> None:
    """Empty the emulator's database (its own reset endpoint) so tests never see each other."""
    host = emulator("FIRESTORE_EMULATOR_HOST")
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    httpx.delete(url, timeout=10).raise_for_status()


@pytest.fixture(params=["sqlite", "firestore"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, project: str, unique: str
) -> Iterator[Store]:
    if request.param == "sqlite":
        from tether.store.sqlite import SqliteStore

        s: Store = SqliteStore(tmp_path / "tether.db")
    else:
        emulator("FIRESTORE_EMULATOR_HOST")
        from tether.store.firestore import FirestoreStore

        s = FirestoreStore(project=project, prefix=unique + "_", indexes=CONTRACT_INDEXES)
    yield s
    s.close()
    if request.param == "firestore":
        clear_firestore(project)


@pytest.fixture(params=["local", "sqlite", "pubsub"])
def bus(request: pytest.FixtureRequest, project: str, unique: str, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "local":
        from tether.bus.local import LocalBus

        b: Bus = LocalBus(redeliver_after=0.2)
    elif request.param == "sqlite":
        from tether.bus.sqlite import SqliteBus

        b = SqliteBus(tmp_path / "bus.db", redeliver_after=0.2)
    else:
        emulator("PUBSUB_EMULATOR_HOST")
        from tether.bus.pubsub import PubSubBus

        b = PubSubBus(project=project, prefix=unique + "-")
    yield b
    b.close()


@pytest.fixture(params=[("sqlite", "local"), ("firestore", "pubsub")], ids=["embedded", "cloud"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, project: str, unique: str
) -> Iterator[Any]:
    """A whole control plane plus a local agent on one pair of adapters."""
    from tether.local.stack import LocalStack
    from tether.settings import Settings

    store: Store
    bus: Bus
    if request.param == ("sqlite", "local"):
        from tether.bus.local import LocalBus
        from tether.store.sqlite import SqliteStore

        store, bus = SqliteStore(tmp_path / "tether.db"), LocalBus(redeliver_after=0.2)
    else:
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        from tether.bus.pubsub import PubSubBus
        from tether.store.firestore import FirestoreStore

        store = FirestoreStore(project=project, prefix=unique + "_")
        bus = PubSubBus(project=project, prefix=unique + "-")
    settings = Settings(home=tmp_path / "home", api_key="tether_admin0000001_" + "k" * 32)
    s = LocalStack(settings, sweep_interval=3600, store=store, bus=bus)
    s.start()
    yield s
    s.stop()
    if request.param == ("firestore", "pubsub"):
        clear_firestore(project)
