"""The embedded store's counts by owner and state: a file made before they were kept gets
them counted once when it is opened, and they then follow every write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tether.store.sqlite import SqliteStore


def test_a_store_made_before_counts_were_kept_counts_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    old = SqliteStore(path)
    for i in range(5):
        old.create("sessions", f"s{i}", {"owner": "alice", "state": "running" if i else "failed"})
    old.db.close()
    with sqlite3.connect(path) as conn:  # the file as an earlier Tether left it
        for trigger in ("counts_insert", "counts_delete", "counts_update"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE counts")
    store = SqliteStore(path)
    assert store.count("sessions", [("owner", "==", "alice")]) == 5
    assert store.count("sessions", [("owner", "==", "alice"), ("state", "in", ["running"])]) == 4
    store.create("sessions", "s5", {"owner": "alice", "state": "running"})
    assert store.count("sessions", [("owner", "==", "alice")]) == 6
    SqliteStore(path)  # opened again (another worker): nothing counted twice
    assert store.count("sessions", [("owner", "==", "alice")]) == 6
