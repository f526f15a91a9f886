from __future__ import annotations

from pathlib import Path

import pytest
from tether.core.models import Role
from tether.errors import Unauthenticated
from tether.service.auth import Auth, hash_password, lookup_id, verify_password
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


def test_a_removed_key_or_a_changed_owner_takes_effect_at_once(tmp_path: Path) -> None:
    auth = Auth(SqliteStore(tmp_path / "db"))
    auth.ensure_user("alice", Role.USER)
    key, other = auth.add_key("alice"), auth.add_key("alice")
    assert auth.principal_for_key(key).role is Role.USER
    assert auth.principal_for_key(other).role is Role.USER
    alice = auth.users.get("alice")
    alice.role = Role.ADMIN
    auth.users.save("alice", alice)
    assert auth.keys.delete(lookup_id(key))
    with pytest.raises(Unauthenticated):
        auth.principal_for_key(key)
    assert auth.principal_for_key(other).is_admin


def test_a_checked_key_vouches_for_nothing_but_itself(tmp_path: Path) -> None:
    auth = Auth(SqliteStore(tmp_path / "db"))
    auth.ensure_user("alice", Role.USER)
    key = auth.add_key("alice")
    auth.principal_for_key(key)
    kind, prefix, secret = key.split("_")
    with pytest.raises(Unauthenticated):  # the same lookup prefix, another secret
        auth.principal_for_key(f"{kind}_{prefix}_{secret[::-1]}")
    with pytest.raises(Unauthenticated):  # refusals are not remembered: added, it works at once
        auth.principal_for_key("chosen-later")
    auth.add_key("alice", "chosen-later")
    assert auth.principal_for_key("chosen-later").id == "alice"


def test_password_hashes_verify_and_are_salted() -> None:
    a, b = hash_password("s3cret"), hash_password("s3cret")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("s3cret", a) and not verify_password("wrong", a)
    assert not verify_password("s3cret", "garbage")
