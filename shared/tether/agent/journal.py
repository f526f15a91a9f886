"""What an agent has done, on disk, so a redelivered command never runs twice."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    command_id TEXT PRIMARY KEY,
    session_id TEXT,
    state TEXT NOT NULL,          -- started | done
    result TEXT                   -- the result event, once done
);
CREATE TABLE IF NOT EXISTS stopped (session_id TEXT PRIMARY KEY);
"""


class Journal:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Survives a crash of the agent process (what redelivery needs); a power loss takes
        # the agent machine and its workspaces with it anyway.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def begin(self, command_id: str, session_id: str | None) -> tuple[str, dict[str, Any] | None]:
        """Claim a command. Returns ("new", None) the first time; ("started", None) if a claim
        exists without a result (a crash or a concurrent duplicate); ("done", result) after."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, result FROM journal WHERE command_id=?", (command_id,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO journal (command_id, session_id, state) VALUES (?, ?, 'started')",
                    (command_id, session_id),
                )
                return "new", None
            return row[0], json.loads(row[1]) if row[1] else None

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE journal SET state='done', result=? WHERE command_id=?",
                (json.dumps(result), command_id),
            )

    def mark_stopped(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO stopped VALUES (?)", (session_id,))

    def was_stopped(self, session_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM stopped WHERE session_id=?", (session_id,)
            ).fetchone()
            return row is not None

    def close(self) -> None:
        self._db.close()
