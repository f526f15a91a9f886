from __future__ import annotations

from pathlib import Path

import pytest
from tether.core.models import Role
from tether.errors import Unauthenticated
from tether.service.auth import Auth, hash_password, verify_password
from tether.store.sqlite import SqliteStore


def test_keys_are_stored_only_as_hashes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    auth = Auth(store)
    auth.ensure_user("alice", Role.USER)
    key = auth.add_key("alice")
    assert key.startswith("tether_")
    raw = (tmp_path / "db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("db-*"))
    assert key.encode() not in raw and key.split("_")[2].encode() not in raw
    who = auth.principal_for_key(key)
    assert (who.id, who.role) == ("alice", Role.USER)
    with pytest.raises(Unauthenticated):
        auth.principal_for_key(key + "x")


def test_generated_keys_are_found_by_their_prefix(tmp_path: Path) -> None:
    auth = Auth(SqliteStore(tmp_path / "db"))
    auth.ensure_user("alice", Role.USER)
    for _ in range(100):  # a secret with "_" in it once broke the key into more than 3 parts
        kind, prefix, secret = auth.add_key("alice").split("_")
        assert kind == "tether" and auth.keys.find(prefix) is not None and len(secret) >= 32


def test_operator_chosen_keys_work_too(tmp_path: Path) -> None:
    auth = Auth(SqliteStore(tmp_path / "db"))
    auth.ensure_user("admin", Role.ADMIN)
    auth.add_key("admin", "your-api-key")
    assert auth.principal_for_key("your-api-key").is_admin
    with pytest.raises(Unauthenticated):
        auth.principal_for_key("your-api-kez")


def test_password_hashes_verify_and_are_salted() -> None:
    a, b = hash_password("s3cret"), hash_password("s3cret")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("s3cret", a) and not verify_password("wrong", a)
    assert not verify_password("s3cret", "garbage")
