"""Embedded Store on SQLite (WAL). Versioned compare-and-set with `UPDATE ... WHERE version=?`."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tether.core.ports import Filter, Position, Stored
from tether.errors import Conflict, Invalid, NotFound, Unavailable
from tether.sqlite_file import SqliteFile
from tether.store.codec import check_field, dumps, encode, loads

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
"""
_POLL = 0.005  # how often `watch` looks for other processes' writes
# The fields the services filter by, each index on a kind and the same json_extract expression
# a query compares (the local counterpart of Firestore's indexes), so a query reads what it
# finds, not every document of its kind: a list of live sessions or a sweep costs the same
# however many ended sessions the store holds.
_INDEXED = (("state", "expires_at"), ("owner", "state"), ("owner", "created_at"),
            ("expires_at",), ("purge_at",), ("idle_at",),
            ("agent_id",), ("session_id",), ("name",), ("created_at",), ("username",))  # fmt: skip
_ARRAY = ("contains", "contains_any")


def _index(fields: tuple[str, ...]) -> str:
    return "docs_by_" + "_".join(fields)


_SCHEMA += "".join(
    f"CREATE INDEX IF NOT EXISTS {_index(fields)} ON docs (kind, "
    + ", ".join(f"json_extract(data, '$.{f}')" for f in fields)
    + ");\n"
    for fields in _INDEXED
)


# How many documents of a kind hold each (owner, state): kept by triggers in the transaction
# of every write, so a count filtered by those two alone (a page's total: a user's sessions,
# or their live ones) reads a few rows, not one per document it counts.
_COUNTED = ("owner", "state")
_KEY = {f: f"coalesce(json_extract({{row}}.data, '$.{f}'), '')" for f in _COUNTED}


def _key(row: str) -> str:
    return ", ".join(expr.format(row=row) for expr in _KEY.values())


def _same_key(row: str) -> str:
    return " AND ".join(f"{f}={expr.format(row=row)}" for f, expr in _KEY.items())


_COUNTS = (
    """CREATE TABLE IF NOT EXISTS counts (
        kind TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (kind, owner, state)
    ) WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS counts_insert AFTER INSERT ON docs BEGIN
        INSERT INTO counts VALUES (new.kind, {_key("new")}, 1)
            ON CONFLICT (kind, owner, state) DO UPDATE SET n = n + 1;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS counts_delete AFTER DELETE ON docs BEGIN
        UPDATE counts SET n = n - 1 WHERE kind = old.kind AND {_same_key("old")};
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS counts_update AFTER UPDATE OF data ON docs
    WHEN ({_key("old")}) IS NOT ({_key("new")}) BEGIN
        UPDATE counts SET n = n - 1 WHERE kind = old.kind AND {_same_key("old")};
        INSERT INTO counts VALUES (new.kind, {_key("new")}, 1)
            ON CONFLICT (kind, owner, state) DO UPDATE SET n = n + 1;
    END""",
)


def _counted(where: Sequence[Filter]) -> tuple[str, list[Any]] | None:
    """The `counts` rows a count by owner and state alone sums, or None for other filters."""
    sql, args = ["WHERE kind=?"], []
    for name, op, value in where:
        if name not in _COUNTED or op not in ("==", "in"):
            return None
        values = list(value) if op == "in" else [value]
        if not all(isinstance(v, str) and v for v in values):  # '': the field's absence too
            return None
        sql.append(f"AND {name} IN ({','.join('?' * len(values))})")
        args.extend(values)
    return " ".join(sql), args


def _index_for(filtered: set[str], order_by: str | None) -> str | None:
    """The index to read a query by: the one whose leading fields the query filters most,
    then reads in its order (a page of the owner's sessions, newest first, reads only the
    page); failing that, the index on its order alone. (Named outright: with no statistics
    SQLite's planner prefers the primary key's range over a whole kind.)"""

    def fit(fields: tuple[str, ...]) -> float:
        lead = next((i for i, f in enumerate(fields) if f not in filtered), len(fields))
        return lead + (0.5 if fields[lead : lead + 1] == (order_by,) else 0)

    best = max(_INDEXED, key=fit)
    return _index(best) if fit(best) > 0 else None


def _data_version(conn: sqlite3.Connection) -> int:
    """Moves whenever another connection commits (another thread's, or another process's)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _matching(
    kind: str, where: Sequence[Filter], order_by: str | None
) -> tuple[str, list[Any]] | None:
    """The `INDEXED BY ... WHERE ...` of a query and its arguments; None when nothing can
    match (an empty `in`)."""
    index = _index_for({name for name, op, _ in where if op not in _ARRAY}, order_by)
    sql = [f"INDEXED BY {index}" if index else "", "WHERE kind=?"]
    args: list[Any] = [kind]
    for name, op, value in where:
        path = f"json_extract(data, '$.{check_field(name)}')"
        if op in ("in", "contains_any"):
            values = [encode(v) for v in value]
            if not values:
                return None
            marks = ",".join("?" * len(values))
            sql.append(
                f"AND {path} IN ({marks})" if op == "in" else
                f"AND EXISTS (SELECT 1 FROM json_each(data, '$.{name}') WHERE value IN ({marks}))"
            )  # fmt: skip
            args.extend(values)
        elif op == "contains":
            sql.append(f"AND EXISTS (SELECT 1 FROM json_each(data, '$.{name}') WHERE value = ?)")
            args.append(encode(value))
        elif op in ("==", "<", "<=", ">", ">="):
            sql.append(f"AND {path} {'=' if op == '==' else op} ?")
            args.append(encode(value))
        else:
            raise Invalid(f"unsupported operator {op!r}", field=name)
    return " ".join(sql), args


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = SqliteFile(self.path)
        self._changed = threading.Condition()
        self._writes = 0
        conn = self.db.conn()
        conn.executescript(_SCHEMA)
        with self.db.transaction():
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='counts'"
            ).fetchone()
            for statement in _COUNTS:
                conn.execute(statement)
            if fresh:  # a store made before counts were kept: count what it holds, once
                conn.execute(f"INSERT INTO counts SELECT kind, {_key('docs')}, COUNT(*) "
                             "FROM docs GROUP BY 1, 2, 3")  # fmt: skip

    def _wrote(self) -> None:
        with self._changed:
            self._writes += 1
            self._changed.notify_all()

    def get(self, kind: str, doc_id: str) -> Stored | None:
        row = (
            self.db.conn()
            .execute("SELECT version, data FROM docs WHERE kind=? AND id=?", (kind, doc_id))
            .fetchone()
        )
        return Stored(doc_id, row[0], loads(row[1])) if row else None

    def create(self, kind: str, doc_id: str, data: dict[str, Any]) -> Stored:
        text = dumps(data)
        try:
            self.db.conn().execute(
                "INSERT INTO docs (kind, id, version, data) VALUES (?, ?, 1, ?)",
                (kind, doc_id, text),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{kind} {doc_id!r} already exists") from None
        self._wrote()
        return Stored(doc_id, 1, data)

    def update(self, kind: str, doc_id: str, data: dict[str, Any], expected_version: int) -> Stored:
        text = dumps(data)
        cur = self.db.conn().execute(
            "UPDATE docs SET data=?, version=version+1 WHERE kind=? AND id=? AND version=?",
            (text, kind, doc_id, expected_version),
        )
        if cur.rowcount == 0:
            if self.get(kind, doc_id) is None:
                raise NotFound(f"{kind} {doc_id!r} not found")
            raise Conflict(f"{kind} {doc_id!r} changed concurrently")
        self._wrote()
        return Stored(doc_id, expected_version + 1, data)

    def patch(self, kind: str, doc_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            raise Invalid("nothing to patch")
        for name in fields:  # top-level only, as on every adapter
            if "." in check_field(name):
                raise Invalid(f"not a top-level field: {name!r}", field=name)
        sets = ", ".join(f"'$.{name}', json(?)" for name in fields)
        values = [orjson.dumps(encode(v)).decode() for v in fields.values()]
        cur = self.db.conn().execute(
            f"UPDATE docs SET data=json_set(data, {sets}), version=version+1 WHERE kind=? AND id=?",
            [*values, kind, doc_id],
        )
        if cur.rowcount == 0:
            raise NotFound(f"{kind} {doc_id!r} not found")
        self._wrote()

    def delete(self, kind: str, doc_id: str, expected: Stored | None = None) -> bool:
        if expected is not None:
            with self.db.transaction() as conn:  # read, compare and delete as one
                if self.get(kind, doc_id) != expected:
                    return False
                conn.execute("DELETE FROM docs WHERE kind=? AND id=?", (kind, doc_id))
            self._wrote()
            return True
        conn = self.db.conn()
        cur = conn.execute("DELETE FROM docs WHERE kind=? AND id=?", (kind, doc_id))
        if cur.rowcount:
            self._wrote()
        return cur.rowcount > 0

    def query(
        self,
        kind: str,
        where: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[Stored]:
        found = _matching(kind, where, order_by)
        if found is None:
            return []
        sql, args = found
        direction = "DESC" if descending else "ASC"
        key = f"json_extract(data, '$.{check_field(order_by)}')" if order_by else None
        if after is not None:
            beyond = "<" if descending else ">"
            if key:
                sql += f" AND ({key} {beyond} ? OR ({key} = ? AND id {beyond} ?))"
                args += [encode(after[0]), encode(after[0]), after[1]]
            else:
                sql += f" AND id {beyond} ?"
                args.append(after[1])
        first = f"{key} {direction}, " if key else ""
        sql += f" ORDER BY {first}id {direction}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else int(limit), int(offset)]
        rows = self.db.conn().execute("SELECT id, version, data FROM docs " + sql, args).fetchall()
        return [Stored(r[0], r[1], loads(r[2])) for r in rows]

    def count(self, kind: str, where: Sequence[Filter] = ()) -> int:
        counted = _counted(where)
        if counted is not None:
            sql, args = counted
            found_n = self.db.conn().execute(f"SELECT SUM(n) FROM counts {sql}", [kind, *args])
            return int(found_n.fetchone()[0] or 0)
        found = _matching(kind, where, None)
        if found is None:
            return 0
        sql, args = found
        return int(self.db.conn().execute("SELECT COUNT(*) FROM docs " + sql, args).fetchone()[0])

    def watch(self, kind: str, doc_id: str, after_version: int, timeout: float) -> Stored | None:
        """Woken by a write of this process at once; by another process's (`tether up
        --workers`) within `_POLL`, which costs a look at the file's change counter, not a
        read of the document."""
        deadline = time.monotonic() + timeout
        conn = self.db.conn()
        while True:
            with self._changed:
                seen = self._writes
            stamp = _data_version(conn)
            doc = self.get(kind, doc_id)
            remaining = deadline - time.monotonic()
            if doc is None or doc.version > after_version or remaining <= 0:
                return doc
            while remaining > 0:
                with self._changed:
                    if self._writes == seen:
                        self._changed.wait(min(remaining, _POLL))
                    if self._writes != seen:
                        break
                if _data_version(conn) != stamp:
                    break
                remaining = deadline - time.monotonic()

    def ping(self) -> None:
        try:
            self.db.conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"sqlite store unavailable: {exc}") from exc

    def close(self) -> None:
        self.db.close()
