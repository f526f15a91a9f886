"""The audit log's service on every store: a record expires after the retention (the sweeper
forgets it), only admins read, newest first, by any mix of filters a page at a time (Firestore's
adapter refuses a query whose index is not declared), and request ids a client chooses are
kept only when well formed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tether.core.models import Principal, Role, utcnow
from tether.core.ports import Store
from tether.errors import Forbidden
from tether.service import audit
from tether.service.audit import Audit
from tether.service.sweeper import RETAINED, purge_expired

ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)
ALICE = Principal(id="alice", username="alice")


def test_a_record_expires_after_the_retention_and_the_sweeper_forgets_it(
    store: Store,
) -> None:
    log = Audit(store, retention=timedelta(days=3))
    long_ago = utcnow() - timedelta(days=4)
    old = log.record(ALICE, "onmemos.create_session", "s-1", 201, "r-1", when=long_ago)
    new = log.record("bob", "streamspace.login", "", 401, "r-2")
    assert old is not None and new is not None
    assert old.purge_at == long_ago + timedelta(days=3)
    assert store.count(audit.KIND) == 2
    assert purge_expired(store, [audit.KIND], RETAINED[audit.KIND]) == 1
    assert [r.id for r in log.query(ADMIN).items] == [new.id]


def test_only_an_admin_reads_it_newest_first_and_filtered(store: Store) -> None:
    log = Audit(store)
    now = utcnow()
    for i, who in enumerate(("alice", "bob", "alice")):
        log.record(who, "onmemos.delete_session", f"s-{i}", 200, f"r-{i}",
                   when=now + timedelta(seconds=i))  # fmt: skip
    with pytest.raises(Forbidden):
        log.query(ALICE)
    assert [r.target for r in log.query(ADMIN).items] == ["s-2", "s-1", "s-0"]
    assert [r.target for r in log.query(ADMIN, actor="alice").items] == ["s-2", "s-0"]
    first = log.query(ADMIN, limit=2)
    assert first.next_cursor is not None
    rest = log.query(ADMIN, limit=2, cursor=first.next_cursor)
    assert [r.target for r in rest.items] == ["s-0"] and rest.next_cursor is None
    since = log.query(ADMIN, since=now + timedelta(seconds=1))
    assert [r.target for r in since.items] == ["s-2", "s-1"]
    # Every filter at once, a page at a time.
    pages = []
    cursor = None
    while True:
        page = log.query(ADMIN, "alice", "onmemos.delete_session", since=now, limit=1,
                         cursor=cursor)  # fmt: skip
        pages.append([r.target for r in page.items])
        if (cursor := page.next_cursor) is None:
            break
    assert pages == [["s-2"], ["s-0"]]
    assert [r.target for r in log.query(ADMIN, target="s-1", actor="bob").items] == ["s-1"]


def test_a_request_id_is_the_clients_only_when_well_formed() -> None:
    assert audit.request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "has space", "x" * 129, "-leading", "ü"):
        made = audit.request_id(bad)
        assert made != bad and audit.REQUEST_ID.fullmatch(made)
