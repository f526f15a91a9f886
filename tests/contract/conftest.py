"""Every port's contract suite runs against every adapter: parametrised fixtures below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.core.ports import Bus, Store

from tests.conftest import emulator


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

        s = FirestoreStore(project=project, prefix=unique + "_")
    yield s
    s.close()


@pytest.fixture(params=["local", "pubsub"])
def bus(request: pytest.FixtureRequest, project: str, unique: str) -> Iterator[Bus]:
    if request.param == "local":
        from tether.bus.local import LocalBus

        b: Bus = LocalBus(redeliver_after=0.2)
    else:
        emulator("PUBSUB_EMULATOR_HOST")
        from tether.bus.pubsub import PubSubBus

        b = PubSubBus(project=project, prefix=unique + "-")
    yield b
    b.close()
