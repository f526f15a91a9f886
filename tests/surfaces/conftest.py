"""A local stack (SQLite store, in-process bus, local agent) behind the real function targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient
from tether.core.models import Role
from tether.local.stack import LocalStack
from tether.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "tether_adminkey0001_" + "a" * 32
ADMIN_PASSWORD = "admin-password"
ALICE_KEY = "tether_alicekey0001_" + "b" * 32
BOB_KEY = "tether_bobkey00001_" + "c" * 32


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    settings = Settings(
        home=tmp_path / "home",
        api_key=ADMIN_KEY,
        admin_password=ADMIN_PASSWORD,
        heartbeat_interval=0.5,
    )
    s = LocalStack(settings, sweep_interval=0.2)
    s.start()
    for name, key in (("alice", ALICE_KEY), ("bob", BOB_KEY)):
        s.services.auth.ensure_user(name, Role.USER)
        s.services.auth.add_key(name, key)
    yield s
    s.stop()


def target_client(name: str) -> FlaskClient:
    app = functions_framework.create_app(name, str(ROOT / "functions" / "main.py"))
    return app.test_client()


@pytest.fixture
def api(stack: LocalStack) -> FlaskClient:
    return target_client("onmemos")


@pytest.fixture
def health_api(stack: LocalStack) -> FlaskClient:
    return target_client("health")


@pytest.fixture
def ss(stack: LocalStack) -> FlaskClient:
    """The StreamSpace target."""
    return target_client("streamspace")
