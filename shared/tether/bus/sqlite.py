"""Bus on a SQLite file, shared by the processes of one machine (`tether up --workers N`).

A subscription is a name bound to a topic (and, for commands, to an agent). Publishing writes
the message once for each subscription of its topic; a subscription's thread claims the
messages that are due (leasing them), hands each to the handler on a pool of threads, and
deletes it once the handler returns. One that raises is due again `redeliver_after` later; one
whose process died with it, when its lease ends. A publisher rings the subscription's doorbell
(a datagram on a Unix socket) so a waiting subscriber looks at once; it also looks every
`POLL` seconds, doorbell or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription, events_subscription
from tether.core.ports import Handler, Message
from tether.errors import Unavailable
from tether.private_dir import private_dir
from tether.sqlite_file import SqliteFile

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY, topic TEXT NOT NULL, agent_id TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    message_id TEXT NOT NULL,
    data TEXT NOT NULL,
    attributes TEXT NOT NULL,
    due REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (subscription, due);
"""
POLL = 0.5  # seconds between looks without a doorbell
PULL_POLL = 0.02  # seconds between a puller's looks (`pull_commands`)
LEASE = 600.0  # a claimed message is due again this long after, if its handler never returns


class SqliteSubscription:
    def __init__(self, bus: SqliteBus, name: str, handler: Handler, workers: int) -> None:
        self.bus, self.name, self.handler = bus, name, handler
        self.bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = bus.doorbell(name)
        path.unlink(missing_ok=True)
        self.bell.bind(str(path))
        self.slots = threading.Semaphore(workers)  # messages in hand at most
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=f"bus-{name}")
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"bus-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.closed.is_set():
            free = self._free()
            if not free:
                continue  # closing, or every handler still busy: look again
            try:
                claimed = self.bus.claim(self.name, free)
            except sqlite3.Error:
                log.exception("bus: claiming on %s failed", self.name)
                claimed = []
            for _ in range(free - len(claimed)):
                self.slots.release()
            for row in claimed:
                self.pool.submit(self._deliver, row)
            if not claimed:
                self._wait()

    def _free(self) -> int:
        """Handlers free to take a message now (their slots taken: each given back by the
        delivery, or by `_run` when no message comes for it); 0 after waiting `POLL` for one."""
        if not self.slots.acquire(timeout=POLL):
            return 0
        if self.closed.is_set():
            self.slots.release()
            return 0
        free = 1
        while self.slots.acquire(blocking=False):
            free += 1
        return free

    def _wait(self) -> None:
        self.bell.settimeout(POLL)
        with contextlib.suppress(TimeoutError, OSError):
            self.bell.recv(64)
        with contextlib.suppress(BlockingIOError, OSError):  # one look serves every ring
            self.bell.setblocking(False)
            while self.bell.recv(64):
                pass

    def _deliver(self, row: tuple[int, str, str, str]) -> None:
        rowid, message_id, data, attributes = row
        try:
            self.handler(Message(orjson.loads(data), orjson.loads(attributes), message_id))
        except Exception:
            log.exception("handler on %s failed; redelivering %s", self.name, message_id)
            self.bus.release(rowid)
        else:
            self.bus.done(rowid)
        finally:
            self.slots.release()

    def close(self) -> None:
        self.closed.set()
        self.bus.ring(self.name)
        self.thread.join(POLL + 5)
        self.pool.shutdown(wait=True)  # handlers under way finish (or are redelivered)
        self.bell.close()
        self.bus.doorbell(self.name).unlink(missing_ok=True)


class SqliteBus:
    def __init__(self, path: str | Path, workers: int = 8, redeliver_after: float = 0.5) -> None:
        self.path = str(path)
        self.db = SqliteFile(self.path)
        self._workers = workers
        self._redeliver_after = redeliver_after
        digest = hashlib.sha256(str(Path(self.path).resolve()).encode()).hexdigest()[:12]
        # Unix socket paths are limited to ~108 bytes: the doorbells live in a short dir.
        self._bells = private_dir(
            Path(tempfile.gettempdir()) / f"tether-bus-{os.getuid()}-{digest}"
        )
        self._subs: list[SqliteSubscription] = []
        self._lock = threading.Lock()
        self.db.conn().executescript(_SCHEMA)

    def doorbell(self, subscription: str) -> Path:
        return self._bells / (hashlib.sha256(subscription.encode()).hexdigest()[:16] + ".bell")

    def ring(self, subscription: str) -> None:
        """Wakes the subscription's thread, if one listens (best effort: it polls anyway)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            with contextlib.suppress(OSError):
                s.sendto(b"!", str(self.doorbell(subscription)))

    # -- the messages' life ------------------------------------------------------------------

    def _ensure(self, topic: str, name: str, agent_id: str | None) -> None:
        self.db.conn().execute(
            "INSERT OR IGNORE INTO subscriptions (name, topic, agent_id) VALUES (?, ?, ?)",
            (name, topic, agent_id),
        )

    def _publish(self, topic: str, data: dict[str, Any], attributes: dict[str, str]) -> str:
        message_id = secrets.token_hex(8)
        body, attrs = orjson.dumps(data).decode(), orjson.dumps(attributes).decode()
        with self.db.transaction() as conn:
            subs = conn.execute(
                "SELECT name, agent_id FROM subscriptions WHERE topic=?", (topic,)
            ).fetchall()
            to = attributes.get("agent_id")
            targets = [name for name, agent in subs if agent is None or agent == to]
            conn.executemany(
                "INSERT INTO messages (subscription, message_id, data, attributes, due) "
                "VALUES (?, ?, ?, ?, 0)",
                [(name, message_id, body, attrs) for name in targets],
            )
        for name in targets:
            self.ring(name)
        return message_id

    def claim(self, subscription: str, most: int) -> list[tuple[int, str, str, str]]:
        """Up to `most` due messages of the subscription, leased to the caller."""
        now = time.time()
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, message_id, data, attributes FROM messages "
                "WHERE subscription=? AND due<=? ORDER BY id LIMIT ?",
                (subscription, now, most),
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET due=? WHERE id=?", [(now + LEASE, r[0]) for r in rows]
            )
        return rows

    def done(self, rowid: int) -> None:
        self.db.conn().execute("DELETE FROM messages WHERE id=?", (rowid,))

    def release(self, rowid: int) -> None:
        due = time.time() + self._redeliver_after
        self.db.conn().execute("UPDATE messages SET due=? WHERE id=?", (due, rowid))

    # -- the port ----------------------------------------------------------------------------

    def publish_command(self, agent_id: str, data: dict[str, Any], awaited: bool = False) -> str:
        # The agent's subscription first, so nothing sent before the agent subscribes is lost.
        self._ensure(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return self._publish(COMMANDS_TOPIC, data, {"agent_id": agent_id})

    def publish_event(self, data: dict[str, Any]) -> str:
        return self._publish(EVENTS_TOPIC, data, {"type": str(data.get("type", ""))})

    def _subscribe(
        self, topic: str, name: str, agent_id: str | None, handler: Handler
    ) -> SqliteSubscription:
        self._ensure(topic, name, agent_id)
        sub = SqliteSubscription(self, name, handler, self._workers)
        with self._lock:
            self._subs.append(sub)
        return sub

    def subscribe_commands(self, agent_id: str, handler: Handler) -> SqliteSubscription:
        name = commands_subscription(agent_id)
        return self._subscribe(COMMANDS_TOPIC, name, agent_id, handler)

    def subscribe_events(self, name: str, handler: Handler) -> SqliteSubscription:
        return self._subscribe(EVENTS_TOPIC, events_subscription(name), None, handler)

    def pull_commands(self, agent_id: str, most: int, timeout: float) -> list[Message]:
        name = commands_subscription(agent_id)
        self._ensure(COMMANDS_TOPIC, name, agent_id)
        deadline = time.monotonic() + timeout
        while True:
            with self.db.transaction() as conn:
                rows = conn.execute(
                    "SELECT id, message_id, data, attributes FROM messages "
                    "WHERE subscription=? AND due<=? ORDER BY id LIMIT ?",
                    (name, time.time(), most),
                ).fetchall()
                conn.executemany("DELETE FROM messages WHERE id=?", [(r[0],) for r in rows])
            if rows or time.monotonic() >= deadline:
                return [Message(orjson.loads(d), orjson.loads(a), m) for _, m, d, a in rows]
            # A doorbell is one listener's; a poller looks again shortly instead.
            time.sleep(min(PULL_POLL, max(deadline - time.monotonic(), 0)))

    def expect_reply(self, command_id: str) -> None:
        """No inbox: a waiter here watches the command's record, which the events handler of
        this machine writes at once."""
        return None

    def ping(self) -> None:
        try:
            self.db.conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise Unavailable(f"sqlite bus unavailable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.close()
