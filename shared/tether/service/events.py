"""Handles messages on `agent-events`: register, heartbeat, command_ack, command_result; and
the commands Pub/Sub dead-letters, pushed to the same function.

Runs in the `agent_events` CloudEvent function in the cloud and on the in-process bus locally.
Every branch is idempotent, because Pub/Sub delivers at least once.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from tether import logs, tracing
from tether.core.lifecycle import FINAL_COMMAND_STATES
from tether.core.models import CommandType
from tether.core.ports import Bus
from tether.errors import Invalid
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.debug import Debug
from tether.service.sessions import Sessions
from tether.service.warnings import Warnings

log = logging.getLogger(__name__)

# Pub/Sub adds this attribute to each message it moves to a dead-letter topic.
DEAD_LETTER_ATTEMPTS = "CloudPubSubDeadLetterSourceDeliveryCount"
DEAD_LETTERED = "dead_lettered"


@dataclass
class Events:
    bus: Bus
    agents: Agents
    commands: Commands
    sessions: Sessions
    heartbeat_interval: float = 10.0
    debug: Debug | None = None  # Kubently's runs, finished by their commands' results
    warnings: Warnings | None = None  # an idle timeout's warning waits for its idle check

    def handle(self, data: dict[str, Any], attributes: dict[str, str] | None = None) -> None:
        """Apply one event, or a dead-lettered command (by its `attributes`). A malformed one
        is logged and dropped (redelivering it could never succeed); a backend failure raises,
        so the bus delivers the event again."""
        attributes = attributes or {}
        ids = {k: v for k in ("command_id", "agent_id") if isinstance(v := data.get(k), str)}
        # A span for an event of a trace (a command's result, under the command's span); an
        # event of none (a heartbeat) starts none.
        traced = tracing.TRACEPARENT in attributes
        said = {f"tether.{k}": v for k, v in ids.items()} | {"tether.event": str(data.get("type"))}
        with (
            logs.bind(**ids, **logs.trace_ids(attributes)),
            tracing.span(f"event {data.get('type')}", "consumer", said, attributes)
            if traced
            else contextlib.nullcontext(),
        ):
            try:
                if DEAD_LETTER_ATTEMPTS in attributes:
                    self._dead_lettered(data, attributes)
                else:
                    self._apply(data)
            except (Invalid, KeyError, TypeError, ValueError) as exc:
                log.warning("dropping malformed agent event %r: %s", data, exc)

    def _dead_lettered(self, data: dict[str, Any], attributes: dict[str, str]) -> None:
        """A command Pub/Sub gave up delivering (its agent failed it, or crashed on it, at
        every attempt) fails as if its agent had said so: its session moves on, and a caller
        waiting on it is answered now instead of at its timeout. Once: a command already final
        stays as it is (a second dead-lettering, or one after a late result)."""
        if data.get("type") != "command":  # a register_ack: nothing waits on it
            log.warning("dropping a dead-lettered %r message", data.get("type"))
            return
        command_id = str(data["command_id"])
        before = self.commands.repo.find(command_id)
        if before is None:
            log.warning("dead-lettered command %s is not known (expired?)", command_id)
            return
        attempts = int(attributes[DEAD_LETTER_ATTEMPTS])
        result = {
            "type": "command_result",
            "agent_id": before.agent_id,
            "command_id": command_id,
            "epoch": int(data.get("epoch", 1)),
            "status": "failed",
            "result": {"reason": DEAD_LETTERED, "delivery_attempts": attempts},
            "error": f"{DEAD_LETTERED}: no agent took the command in {attempts} deliveries",
            **({"reply_to": before.reply_to} if before.reply_to else {}),
        }
        self._apply(result)  # again on a redelivery: a crash may have cut the first short
        if before.state not in FINAL_COMMAND_STATES and before.reply_to:
            self.bus.publish_event(result)  # reaches the waiting caller's inbox

    def _apply(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        agent_id = data.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise Invalid("event without agent_id", field="agent_id")
        if kind == "register":
            self.agents.register(agent_id, *_identity(data), _details(data))
            self.bus.publish_command(
                agent_id,
                {
                    "type": "register_ack",
                    "agent_id": agent_id,
                    "status": "registered",
                    "heartbeat_interval": f"{self.heartbeat_interval:g}s",
                },
            )
        elif kind == "heartbeat":
            self.agents.heartbeat(agent_id, *_identity(data), _details(data))
        elif kind == "command_ack":
            self.commands.acked(str(data["command_id"]), int(data.get("epoch", 1)))
        elif kind == "command_result":
            command = self.commands.finished(
                str(data["command_id"]),
                int(data.get("epoch", 1)),
                ok=data.get("status") == "completed",
                result=data.get("result"),
                error=data.get("error"),
            )
            # Apply even when the command was final already: the first delivery may have
            # crashed between recording the result and moving the session on.
            if command is not None and command.state in FINAL_COMMAND_STATES:
                if command.type is CommandType.CHECK_IDLE:  # idle after all, or still at work
                    self.sessions.idle_checked(command)
                    if self.warnings is not None:
                        self.warnings.after_idle_check(command.session_id or "")
                self.sessions.apply_result(command)
                if self.debug is not None:
                    self.debug.apply_result(command)
        else:
            log.warning("ignoring unknown event type %r from %s", kind, agent_id)


def _identity(data: dict[str, Any]) -> tuple[str, str, int]:
    """Platform, region and session capacity, from StreamSpace's register/heartbeat shape
    (`capacity: {"max_sessions": n}`) or a bare number."""
    capacity = data.get("capacity", {})
    if isinstance(capacity, dict):
        capacity = capacity.get("max_sessions", 10)
    return str(data.get("platform", "local")), str(data.get("region", "local")), int(capacity)


def _details(data: dict[str, Any]) -> dict[str, Any] | None:
    """What an agent says of itself (`Agent.details`), if it says anything."""
    details = data.get("details")
    if details is None:
        return None
    if not isinstance(details, dict):
        raise Invalid("details must be an object", field="details")
    return details
