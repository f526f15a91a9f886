"""Third-party Kubently executors: clusters whose kubectl runner is not a Tether agent, but a
program that takes its commands over HTTP (the document's long poll, the real executor's SSE
stream) and posts their results back. Their commands travel the bus as any agent's do; this
takes them off the cluster's subscription and turns a posted result into the agent event a
Tether agent would have published."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tether.core.models import CommandType, utcnow
from tether.core.ports import Bus
from tether.errors import Forbidden, NotFound
from tether.service.commands import Commands
from tether.service.debug import OUTPUT_CAP

LEASE_MARGIN = 30.0  # seconds an executor has past a command's timeout to post its result


@dataclass(frozen=True)
class Handed:
    """A command as an executor receives it: the verb first, no `kubectl`."""

    id: str
    args: list[str]
    timeout: float
    session_id: str | None
    correlation_id: str | None


def _text(value: Any, cap: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    if len(text.encode()) <= cap:
        return text
    return text.encode()[:cap].decode("utf-8", "ignore") + f"\n[output truncated at {cap} bytes]"


def normalized(posted: dict[str, Any]) -> dict[str, Any]:
    """An executor's result (the document's, or the real executor's flat one with
    `return_code` and `status`) as a Tether cluster agent reports it."""
    success = bool(posted.get("success"))
    exit_code = posted.get("exit_code", posted.get("return_code"))
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        exit_code = 0 if success else 1
    elapsed = posted.get("execution_time_ms")
    return {
        "output": _text(posted.get("output"), OUTPUT_CAP) or "",
        "error": _text(posted.get("error"), 16 * 1024),
        "exit_code": 0 if success else (exit_code or 1),
        "execution_time_ms": elapsed if isinstance(elapsed, int) else None,
        "timed_out": str(posted.get("status", "")).upper() == "TIMEOUT",
        "truncated": False,
    }


@dataclass
class Executors:
    bus: Bus
    commands: Commands
    lease_margin: float = LEASE_MARGIN

    def take(self, cluster_id: str, most: int, timeout: float) -> list[Handed]:
        """The cluster's next commands (waiting up to `timeout` for one). Each is leased to
        the executor for its timeout and a margin: the sweeper publishes it again after that
        if no result came (the answer that carried it may never have arrived)."""
        handed = []
        for message in self.bus.pull_commands(cluster_id, most, timeout):
            data = message.data
            if data.get("type") != "command" or data.get("command_type") != CommandType.KUBECTL:
                continue  # a Tether agent's message (register_ack): not an executor's business
            payload = data.get("data") or {}
            command_id = str(data["command_id"])
            lease = float(payload.get("timeout", 10)) + self.lease_margin
            until = utcnow() + timedelta(seconds=lease)
            self.commands.lease(command_id, int(data.get("epoch", 1)), until)
            handed.append(Handed(command_id, list(payload.get("argv", [])),
                                 float(payload.get("timeout", 10)), data.get("session_id"),
                                 payload.get("correlation_id")))  # fmt: skip
        return handed

    def report(
        self, cluster_id: str, command_id: str, posted: dict[str, Any], unknown: str = "forbidden"
    ) -> None:
        """An executor's result: published as the cluster's `command_result` event (so the
        waiting request's inbox hears it, and the events handler records it). A command that
        is not this cluster's is Forbidden (Kubently's executor), or with `unknown="not_found"`
        NotFound (the document's long poll)."""
        command = self.commands.repo.find(command_id) if command_id else None
        if command is None or command.agent_id != cluster_id:
            if unknown == "not_found":
                raise NotFound("Command not found", field="command_id")
            raise Forbidden("Command was not issued to this cluster", field="command_id")
        event = {"type": "command_result", "agent_id": cluster_id, "command_id": command.id,
                 "epoch": command.epoch, "status": "completed", "result": normalized(posted),
                 "error": None}  # fmt: skip
        if command.reply_to:
            event["reply_to"] = command.reply_to
        self.bus.publish_event(event)

    def queue_depth(self, cluster_id: str) -> int:
        where = [("agent_id", "==", cluster_id), ("state", "==", "pending")]
        return self.commands.repo.count(where)  # type: ignore[arg-type]
