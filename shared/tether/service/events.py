"""Handles messages on `agent-events`: register, heartbeat, command_ack, command_result.

Runs in the `agent_events` CloudEvent function in the cloud and on the in-process bus locally.
Every branch is idempotent, because Pub/Sub delivers at least once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Events:
    bus: Bus
    agents: Agents
    commands: Commands
    sessions: Sessions
    heartbeat_interval: float = 10.0
    debug: Debug | None = None  # Kubently's runs, finished by their commands' results
    warnings: Warnings | None = None  # an idle timeout's warning waits for its idle check

    def handle(self, data: dict[str, Any]) -> None:
        """Apply one event. A malformed one is logged and dropped (redelivering it could never
        succeed); a backend failure raises, so the bus delivers the event again."""
        try:
            self._apply(data)
        except (Invalid, KeyError, TypeError, ValueError) as exc:
            log.warning("dropping malformed agent event %r: %s", data, exc)

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
