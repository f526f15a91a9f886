"""The audit log as every surface's Router writes it, through the real function targets: each
surface's mutating calls under its own name, reads not at all, a sign-in's actor from the
username it named, and a store that cannot take the record failing nothing but the record."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tether.core.models import Principal, Role
from tether.local.stack import LocalStack
from tether.service.audit import Audit
from tether.store.sqlite import SqliteStore

from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, target_client

ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


def latest(stack: LocalStack, n: int) -> list[tuple[str | None, str, str, str]]:
    page = stack.services.audit.query(ADMIN, limit=n)
    return [(r.actor, r.action, r.target, r.result) for r in page.items]


def test_each_surface_records_its_own_mutating_calls(stack: LocalStack) -> None:
    alice = {"X-API-Key": ALICE_KEY}
    kubently = target_client("kubently").post("/debug/session", json={"cluster_id": "nope"},
                                              headers=alice)  # fmt: skip
    openctrol = target_client("openctrol").post(
        "/openctrol/desk-1/api/v1/sessions/desktop/s-1/end", headers=alice
    )
    signed = target_client("sentinelstacks").post(
        "/v1/auth/login", json={"username": "alice", "password": "not-hers"}
    )
    streamspace = target_client("streamspace")
    assert streamspace.get("/api/v1/api-keys", headers=alice).status_code == 200  # not recorded
    made = streamspace.post("/api/v1/api-keys", json={"name": "k"}, headers=alice)
    assert made.status_code == 201
    assert latest(stack, 4) == [
        ("alice", "streamspace.create_key", made.json["id"], "201"),
        ("alice", "sentinelstacks.login", "", str(signed.status_code)),
        ("alice", "openctrol.end_session", "desk-1/s-1", str(openctrol.status_code)),
        ("alice", "kubently.create_session", "", str(kubently.status_code)),
    ]
    for answer in (kubently, openctrol, signed, made):
        assert answer.headers["X-Request-Id"]
    assert made.json["key"] not in str(stack.services.audit.query(ADMIN, limit=10).items)


def test_a_call_without_a_credential_is_recorded_with_no_actor(stack: LocalStack) -> None:
    refused = target_client("onmemos").post("/v1/sessions", json={"template": "python"})
    assert refused.status_code == 401
    assert latest(stack, 1) == [(None, "onmemos.create_session", "", "401")]
    [record] = stack.services.audit.query(ADMIN, limit=1).items
    assert record.request_id == refused.headers["X-Request-Id"]


def test_a_store_that_cannot_take_the_record_fails_only_the_record(
    stack: LocalStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone.db"
    gone = SqliteStore(path)
    gone.close()
    for made in tmp_path.glob("gone.db*"):
        made.unlink()
    path.mkdir()  # where its file was: it cannot be opened again, every write to it raises
    stack.services.audit = Audit(gone)
    with caplog.at_level(logging.ERROR, logger="tether.service.audit"):
        made = target_client("streamspace").post(
            "/api/v1/api-keys", json={"name": "k"}, headers={"X-API-Key": ADMIN_KEY}
        )
    assert made.status_code == 201, made.json
    assert made.headers["X-Request-Id"]
    assert "audit record lost: streamspace.create_key" in caplog.text
