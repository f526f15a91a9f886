"""Store contract: every adapter (SQLite, Firestore emulator) behaves the same."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, NotFound, Unavailable

from tests.conftest import emulator
from tests.contract.conftest import clear_firestore


def test_create_then_get_round_trips_data_and_starts_at_version_1(store: Store) -> None:
    created = store.create("sessions", "s1", {"owner": "u1", "n": 3, "tags": ["a"], "ok": True})
    assert created.version == 1
    got = store.get("sessions", "s1")
    assert got is not None
    assert got.version == 1
    assert got.data == {"owner": "u1", "n": 3, "tags": ["a"], "ok": True}


def test_get_missing_is_none_and_create_twice_conflicts(store: Store) -> None:
    assert store.get("sessions", "nope") is None
    store.create("sessions", "s1", {"a": 1})
    with pytest.raises(Conflict):
        store.create("sessions", "s1", {"a": 2})
    got = store.get("sessions", "s1")
    assert got is not None and got.data == {"a": 1}


def test_update_is_compare_and_set(store: Store) -> None:
    store.create("sessions", "s1", {"state": "pending"})
    updated = store.update("sessions", "s1", {"state": "running"}, expected_version=1)
    assert updated.version == 2
    with pytest.raises(Conflict):
        store.update("sessions", "s1", {"state": "failed"}, expected_version=1)
    got = store.get("sessions", "s1")
    assert got is not None and got.data == {"state": "running"} and got.version == 2


def test_update_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update("sessions", "ghost", {"a": 1}, expected_version=1)


def test_patch_sets_fields_without_a_version_check(store: Store) -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    store.create("agents", "a1", {"status": "online", "n": 1, "last": None})
    store.patch("agents", "a1", {"last": when, "n": None})
    got = store.get("agents", "a1")
    assert got is not None and got.version == 2
    assert got.data["status"] == "online" and got.data["n"] is None
    assert store.query("agents", [("last", "==", when)])[0].id == "a1"  # a time, compared
    with pytest.raises(Conflict):  # a writer that read before the patch lost its race
        store.update("agents", "a1", {"status": "offline"}, expected_version=1)
    with pytest.raises(NotFound):
        store.patch("agents", "ghost", {"n": 2})
    with pytest.raises(Invalid):
        store.patch("agents", "a1", {"a.b": 2})


def test_delete(store: Store) -> None:
    store.create("sessions", "s1", {"a": 1})
    assert store.delete("sessions", "s1") is True
    assert store.get("sessions", "s1") is None
    assert store.delete("sessions", "s1") is False


def test_a_delete_of_what_was_read_leaves_a_document_changed_or_made_again(
    store: Store,
) -> None:
    """A slot judged free, released and taken again by another session meanwhile, stays:
    though made again at version 1, it is not the document that was read."""
    read = store.create("agent_slots", "a:0", {"session_id": "s1"})
    assert store.delete("agent_slots", "a:0")
    again = store.create("agent_slots", "a:0", {"session_id": "s2"})
    assert again.version == read.version
    assert not store.delete("agent_slots", "a:0", read)
    changed = store.update("agent_slots", "a:0", {"session_id": "s2", "n": 1}, 1)
    assert not store.delete("agent_slots", "a:0", again)  # changed since
    got = store.get("agent_slots", "a:0")
    assert got == changed
    assert store.delete("agent_slots", "a:0", got)
    assert not store.delete("agent_slots", "a:0", got)  # gone: nothing to delete


def test_kinds_are_separate(store: Store) -> None:
    store.create("sessions", "x", {"k": "s"})
    store.create("commands", "x", {"k": "c"})
    s, c = store.get("sessions", "x"), store.get("commands", "x")
    assert s is not None and c is not None
    assert (s.data["k"], c.data["k"]) == ("s", "c")


def test_query_filters_order_and_limit(store: Store) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        store.create(
            "sessions",
            f"s{i}",
            {
                "owner": "alice" if i % 2 == 0 else "bob",
                "state": "running" if i < 3 else "terminated",
                "created_at": base + timedelta(minutes=i),
            },
        )
    ids = [d.id for d in store.query("sessions", [("owner", "==", "alice")])]
    assert ids == ["s0", "s2", "s4"]
    running = store.query(
        "sessions", [("state", "in", ["running"])], order_by="created_at", descending=True
    )
    assert [d.id for d in running] == ["s2", "s1", "s0"]
    limited = store.query("sessions", order_by="created_at", limit=2)
    assert [d.id for d in limited] == ["s0", "s1"]
    late = store.query("sessions", [("created_at", ">=", base + timedelta(minutes=3))])
    assert [d.id for d in late] == ["s3", "s4"]
    early = store.query("sessions", [("created_at", "<", base + timedelta(minutes=1))])
    assert [d.id for d in early] == ["s0"]


@pytest.mark.parametrize("descending", [False, True])
def test_a_cursor_walks_a_changing_collection_without_skipping_or_repeating(
    store: Store, descending: bool
) -> None:
    """Pages of 4, resumed after each page's last document, while sessions come and go: what
    stays put is seen exactly once, what is deleted before its turn never, what arrives ahead
    of the cursor in its turn, and nothing twice. Ties on the order field break by id."""
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def add(doc_id: str, minute: int, owner: str = "alice") -> None:
        at = base + timedelta(minutes=minute)
        store.create("sessions", doc_id, {"owner": owner, "created_at": at})

    for i in range(20):
        add(f"s{i:02}", i // 2)  # two sessions a minute: ties
    add("bob1", 3, owner="bob")
    where = [("owner", "==", "alice")]
    seen: list[str] = []
    after = None
    deleted, arrived = set(), set()
    while True:
        page = store.query("sessions", where, "created_at", descending, limit=4, after=after)
        if not page:
            break
        assert len(page) <= 4
        seen += [d.id for d in page]
        last = page[-1]
        after = (last.data["created_at"], last.id)
        n = len(seen)
        if n == 4:  # one not yet seen goes; one arrives behind the cursor, one ahead of it
            gone = "s11" if not descending else "s08"
            assert store.delete("sessions", gone)
            deleted.add(gone)
            add("early", 0 if not descending else 50)  # behind: never in this walk
            add("late", 50 if not descending else 0)  # ahead: in its turn
            arrived.add("late")
        if n == 8:
            add("tie", 9 if not descending else 0)  # ahead, tied with s18/s19 on time
            arrived.add("tie")
    stayed = {f"s{i:02}" for i in range(20)} - deleted
    assert len(seen) == len(set(seen)), "a document came twice"
    assert set(seen) == stayed | arrived
    assert seen == [d.id for d in store.query("sessions", where, "created_at", descending)
                    if d.id != "early"]  # fmt: skip


def test_offset_pages_and_counts(store: Store) -> None:
    for i in range(7):
        state = "running" if i % 3 else "terminated"
        store.create("sessions", f"s{i}", {"owner": "alice", "state": state, "tags": [f"t{i % 2}"]})
    where = [("owner", "==", "alice")]
    assert [d.id for d in store.query("sessions", where, limit=3, offset=3)] == ["s3", "s4", "s5"]
    assert [d.id for d in store.query("sessions", where, offset=5)] == ["s5", "s6"]
    assert store.count("sessions", where) == 7
    assert store.count("sessions", [*where, ("state", "in", ["running"])]) == 4
    assert store.count("sessions", [("state", "in", [])]) == 0
    assert store.count("sessions", [("tags", "contains", "t1")]) == 3
    assert store.count("nothing_here") == 0


def test_counts_follow_every_kind_of_write(store: Store) -> None:
    """Counts by owner and state (a page's total) after creates, updates and patches that
    move a document between owners and states, and deletes: always what a query finds."""
    for i in range(6):
        owner = "alice" if i < 4 else "bob"
        store.create("sessions", f"s{i}", {"owner": owner, "state": "running"})
    store.create("sessions", "no-owner", {"state": "running"})
    first = store.get("sessions", "s0")
    assert first is not None
    store.update("sessions", "s0", {**first.data, "state": "terminated"}, first.version)
    store.patch("sessions", "s1", {"owner": "bob"})
    store.patch("sessions", "s2", {"idle_at": "later"})  # neither owner nor state
    store.delete("sessions", "s3")
    store.delete("sessions", "s4", store.get("sessions", "s4"))
    store.create("other", "s0", {"owner": "alice", "state": "running"})
    for where in (
        [("owner", "==", "alice")],
        [("owner", "==", "bob")],
        [("owner", "==", "alice"), ("state", "in", ["running", "terminated"])],
        [("owner", "==", "alice"), ("state", "==", "terminated")],
        [("state", "in", ["running"])],
        [("owner", "==", "carol")],
        [],
    ):
        found = store.query("sessions", where)
        assert store.count("sessions", where) == len(found), where
    assert store.count("sessions", [("owner", "==", "alice")]) == 2  # s0 (terminated), s2
    assert store.count("sessions") == 5


def test_array_membership_filters(store: Store) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    tags = [["a", "b"], ["b"], [], ["c", "a"], ["c"]]
    for i, t in enumerate(tags):
        store.create(
            "sessions",
            f"s{i}",
            {"owner": "u", "tags": t, "created_at": base + timedelta(minutes=i)},
        )
    one = store.query("sessions", [("owner", "==", "u"), ("tags", "contains", "a")], "created_at")
    assert [d.id for d in one] == ["s0", "s3"]
    anyof = store.query("sessions", [("tags", "contains_any", ["b", "c"])], "created_at",
                        descending=True, limit=3)  # fmt: skip
    assert [d.id for d in anyof] == ["s4", "s3", "s1"]
    assert store.query("sessions", [("tags", "contains_any", [])]) == []


def test_equality_and_in_on_two_fields_with_a_limit(store: Store) -> None:
    """The shape of "is anything live still using it?" (a template's or an agent's sessions):
    served without a composite index, one document at most."""
    rows = [("notes", "terminated"), ("notes", "hibernated"), ("notes", "running"),
            ("other", "running")]  # fmt: skip
    for i, (template, state) in enumerate(rows):
        store.create("sessions", f"s{i}", {"template": template, "state": state})
    live = ["running", "hibernated", "pending"]
    found = store.query("sessions", [("template", "==", "notes"), ("state", "in", live)], limit=1)
    assert [d.id for d in found] == ["s1"]
    none = store.query("sessions", [("template", "==", "gone"), ("state", "in", live)], limit=1)
    assert none == []


def test_instants_order_by_time_whatever_their_zone_or_precision(store: Store) -> None:
    base = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)  # no microseconds
    plus_two = timezone(timedelta(hours=2))
    for doc_id, when in [
        ("s1", base + timedelta(seconds=1)),
        ("s2", base),
        ("s3", (base + timedelta(milliseconds=500)).astimezone(plus_two)),
        ("s4", base + timedelta(microseconds=5)),
    ]:
        store.create("sessions", doc_id, {"created_at": when})
    assert [d.id for d in store.query("sessions", order_by="created_at")] == [
        "s2", "s4", "s3", "s1"
    ]  # fmt: skip
    later = store.query("sessions", [("created_at", ">", base)], order_by="created_at")
    assert [d.id for d in later] == ["s4", "s3", "s1"]


def test_datetimes_read_back_as_the_same_instant(store: Store) -> None:
    from pydantic import TypeAdapter

    when = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    store.create("sessions", "s1", {"expires_at": when})
    got = store.get("sessions", "s1")
    assert got is not None
    assert TypeAdapter(datetime).validate_python(got.data["expires_at"]) == when


def test_concurrent_updates_one_wins_the_other_conflicts(store: Store) -> None:
    store.create("agents", "a1", {"n": 0})
    results: list[str] = []
    barrier = threading.Barrier(2)

    def bump(tag: str) -> None:
        barrier.wait()
        try:
            store.update("agents", "a1", {"n": 1, "by": tag}, expected_version=1)
            results.append("won")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=bump, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "won"]
    got = store.get("agents", "a1")
    assert got is not None and got.version == 2


def test_watch_returns_on_change_from_another_thread(store: Store) -> None:
    store.create("commands", "c1", {"state": "pending"})

    def later() -> None:
        time.sleep(0.3)
        store.update("commands", "c1", {"state": "succeeded"}, expected_version=1)

    threading.Thread(target=later).start()
    got = store.watch("commands", "c1", after_version=1, timeout=10)
    assert got is not None and got.data["state"] == "succeeded"


def test_watch_times_out_with_current_document(store: Store) -> None:
    store.create("commands", "c1", {"state": "pending"})
    started = time.monotonic()
    got = store.watch("commands", "c1", after_version=1, timeout=0.3)
    assert got is not None and got.version == 1
    assert time.monotonic() - started >= 0.25


def test_ping_succeeds_on_a_live_backend(store: Store) -> None:
    store.ping()


def test_firestore_refuses_a_query_whose_composite_index_is_not_declared(
    project: str, unique: str
) -> None:
    """The emulator never asks for indexes; the cloud does. The adapter asks in its place."""
    emulator("FIRESTORE_EMULATOR_HOST")
    from tether.store.firestore import FirestoreStore

    store = FirestoreStore(project=project, prefix=unique + "_")  # the services' own list
    try:
        store.create("users", "ann", {"role": "user", "username": "ann", "team": "a"})
        # What Users.page asks: declared, so it runs.
        assert [d.id for d in store.query("users", [("role", "==", "user")], "username")] == ["ann"]
        assert [d.id for d in store.query("users", [("role", "==", "user"), ("team", "==", "a")])]
        with pytest.raises(Unavailable, match=r"composite index \(team ASCENDING, username"):
            store.query("users", [("team", "==", "a")], order_by="username")
    finally:
        store.close()
        clear_firestore(project)
