"""Commands to agents through an outbox: written first, then published, results by epoch."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core.lifecycle import FINAL_COMMAND_STATES, CommandState
from tether.core.models import Command, CommandType, utcnow
from tether.core.ports import Bus, Reply, Store
from tether.errors import NotFound, Unavailable
from tether.service import metrics
from tether.service.repo import Repo

log = logging.getLogger(__name__)
_KNOWN_KEPT = 1024
KIND = "commands"
ID = re.compile(r"cmd-[0-9a-f]{32}")  # what `issue` names a command
# How long a record is kept. One not finished in a day is dead: its caller gave up long before
# (the longest exec is an hour). A finished one only meets late duplicates of its result,
# which change nothing. Kept longer, records pile up: at 40k a local exec costs twice as much.
PENDING_KEPT = timedelta(days=1)
FINAL_KEPT = timedelta(minutes=10)


# How long a waiter takes the agent's reply to come, before it watches the record instead:
# a command that runs longer, or a reply lost (an agent too old to send one), costs the
# record's reads, and no more than this in time.
REPLY_WAIT = 5.0


def settle(c: Command, ok: bool, result: dict[str, Any] | None, error: str | None) -> Command:
    """`c` final, with the agent's result."""
    c.state = CommandState.SUCCEEDED if ok else CommandState.FAILED
    c.result, c.error, c.updated_at = result, error, utcnow()
    c.expires_at = c.updated_at + FINAL_KEPT
    return c


def wire(command: Command) -> dict[str, Any]:
    """The message an agent receives (StreamSpace's agent protocol shape, plus our epoch)."""
    return {
        "type": "command",
        "command_id": command.id,
        "command_type": command.type,
        "session_id": command.session_id,
        "epoch": command.epoch,
        "data": command.payload,
        **({"reply_to": command.reply_to} if command.reply_to else {}),
    }


@dataclass
class Commands:
    store: Store
    bus: Bus

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, KIND, Command)
        # The last record this process wrote of each recent command: a result starts from it
        # instead of a read, and `wait` takes a final one from here (on the in-process bus the
        # waiter's own thread recorded it, a moment before; a final command never changes).
        self._known: dict[str, Command] = {}
        self._known_lock = threading.Lock()
        self._replies: dict[str, Reply] = {}  # issued here, awaited: taken by `wait`

    def _remember(self, command: Command) -> None:
        with self._known_lock:
            self._known.pop(command.id, None)  # re-inserted last: evicted last
            self._known[command.id] = command
            if len(self._known) > _KNOWN_KEPT:  # commands whose results went elsewhere
                del self._known[next(iter(self._known))]

    def issue(
        self,
        agent_id: str,
        type: CommandType,
        session_id: str | None,
        payload: dict[str, Any],
        awaited: bool = False,
        command_id: str | None = None,
    ) -> Command:
        """`awaited`: the caller goes on to `wait` for the result (see `Bus.publish_command`).
        `command_id`: a command issued once whoever issues it (`Conflict` if it was)."""
        now = utcnow()
        command = Command(
            id=command_id or f"cmd-{secrets.token_hex(16)}",  # ID
            agent_id=agent_id,
            session_id=session_id,
            type=type,
            payload=payload,
            created_at=now,
            updated_at=now,
            expires_at=now + PENDING_KEPT,
        )
        if awaited and (inbox := self.bus.expect_reply(command.id)) is not None:
            command.reply_to, self._replies[command.id] = inbox
        try:
            # Outbox: the record exists before any agent can see the message, so a crash
            # between the two leaves a pending command that the sweeper publishes, never a
            # lost one. It keeps the inbox, for a result that comes back another way.
            self.repo.create(command.id, command)
            self._remember(command)
            try:
                self.bus.publish_command(agent_id, wire(command), awaited)
            except Unavailable as exc:  # recorded: the sweeper publishes it once the bus is back
                log.warning("command %s not published yet: %s", command.id, exc.message)
        except BaseException:
            self._cancel_reply(command.id)
            raise
        return command

    def _cancel_reply(self, command_id: str) -> None:
        reply = self._replies.pop(command_id, None)
        if reply is not None:
            reply.cancel()

    def wait(self, issued: Command, timeout: float) -> Command:
        """Block until the command is final or `timeout` passes; returns its latest record."""
        deadline = time.monotonic() + timeout
        reply = self._replies.pop(issued.id, None)
        if reply is not None:  # straight from the agent, with no store read
            try:
                event = reply.wait(min(timeout, REPLY_WAIT))
            finally:
                reply.cancel()
            if event is not None and event.get("epoch") == issued.epoch:
                ok = event.get("status") == "completed"
                return settle(issued.model_copy(), ok, event.get("result"), event.get("error"))
        command: Command | None = issued
        while command is not None and command.state not in FINAL_COMMAND_STATES:
            known = self._known.get(issued.id)
            if known is not None and known.state in FINAL_COMMAND_STATES:
                with self._known_lock:
                    self._known.pop(issued.id, None)
                return known
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return command
            command = self.repo.watch(issued.id, command.version, remaining)
        if command is None:
            raise NotFound(f"Command {issued.id} vanished")
        return command

    def acked(self, command_id: str, epoch: int) -> Command | None:
        def move(c: Command) -> Command | None:
            if c.epoch != epoch or c.state is not CommandState.PENDING:
                return None
            c.state = CommandState.ACKED
            c.updated_at = utcnow()
            return c

        return self._mutate_existing(command_id, move)

    def lease(self, command_id: str, epoch: int, until: datetime) -> Command | None:
        """A pending command handed to an executor over HTTP, which acks nothing: published
        again only if no result has come by `until` (its delivery may have been lost with
        the connection)."""

        def hold(c: Command) -> Command | None:
            if c.epoch != epoch or c.state is not CommandState.PENDING:
                return None
            c.leased_until, c.updated_at = until, utcnow()
            return c

        return self._mutate_existing(command_id, hold)

    def finished(
        self,
        command_id: str,
        epoch: int,
        ok: bool,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> Command | None:
        """Record a result. A result from an older lease, or for a command already final, is
        ignored; returns the command as it now stands (None when unknown)."""

        settled = False  # by this call (the last try of `move` decides)

        def move(c: Command) -> Command | None:
            nonlocal settled
            settled = False
            if c.state in FINAL_COMMAND_STATES:
                return None
            if c.epoch != epoch:
                log.warning("stale result for %s (epoch %s, current %s)", c.id, epoch, c.epoch)
                return None
            settled = True
            return settle(c, ok, result, error)

        command = self._mutate_existing(command_id, move)
        if settled and command is not None:  # counted once, however often the result comes
            metrics.command_finished(command.type, command.state.value)
        return command

    def _mutate_existing(self, command_id: str, move: Any) -> Command | None:
        try:
            command = self.repo.mutate(command_id, move, start=self._known.get(command_id))
        except NotFound:
            log.warning("event for unknown command %s", command_id)
            return None
        self._remember(command)
        return command

    def republish_stale(self, older_than: float) -> int:
        """Publish again every command no agent has acked for `older_than` seconds."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        count = 0
        for command in self.repo.query([("state", "==", CommandState.PENDING.value)]):
            if command.updated_at > cutoff or (command.leased_until or cutoff) > now:
                continue

            def bump(c: Command) -> Command | None:
                if c.state is not CommandState.PENDING:
                    return None
                c.publish_count += 1
                c.updated_at = now
                return c

            if self.repo.mutate(command.id, bump).state is CommandState.PENDING:
                try:
                    self.bus.publish_command(command.agent_id, wire(command))
                except Unavailable as exc:  # the rest would fail too: the next pass goes on
                    log.warning("republishing stopped: %s", exc.message)
                    break
                count += 1
        return count
