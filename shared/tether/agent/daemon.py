"""The agent: one bus subscription for its commands, a journal for exactly-once effects."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether import __version__, logs, tracing
from tether.agent.journal import Journal
from tether.agent.kubectl import Kubectl

if TYPE_CHECKING:
    from tether.agent.desktop import DesktopAgent
from tether.core.models import CommandType, Template, WorkspaceSpec
from tether.core.ports import Bus, Message, Provisioner, Subscription
from tether.deferred import later
from tether.errors import NotFound, TetherError

log = logging.getLogger(__name__)

# Provisioning calls are idempotent, so one interrupted by a crash is simply run again;
# an interrupted exec is reported as failed rather than run a second time. (Log reads are
# harmless to repeat too, but need no lock.)
_RERUNNABLE = {
    CommandType.START_SESSION,
    CommandType.STOP_SESSION,
    CommandType.HIBERNATE_SESSION,
    CommandType.WAKE_SESSION,
    CommandType.CHECK_IDLE,  # (a question: asking again is harmless)
}


class Agent:
    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        provisioner: Provisioner,
        journal: Journal,
        region: str = "local",
        capacity: int = 10,
        heartbeat_interval: float = 10.0,
        ack_after: float = 1.0,
        kubectl: Kubectl | None = None,
        desktop: DesktopAgent | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.bus = bus
        self.provisioner = provisioner
        self.journal = journal
        self.region = region
        self.capacity = capacity
        self.heartbeat_interval = heartbeat_interval
        self.ack_after = ack_after
        self.kubectl = kubectl  # a cluster agent's (Kubently)
        self.desktop = desktop  # a desktop agent's (Openctrol)
        self._session_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._unacked: dict[str, tuple[int, float]] = {}  # command_id -> (epoch, arrived at)
        self._stop = threading.Event()
        self._sub: Subscription | None = None
        self._threads: list[threading.Thread] = []
        self.registered = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        identity = {
            "agent_id": self.agent_id,
            "platform": self.provisioner.platform,
            "region": self.region,
            "capacity": {"max_sessions": self.capacity},
            "metadata": {"agent_version": __version__},
        }
        if self.desktop is not None:
            identity["details"] = self.desktop.details()
        return identity

    def start(self, pull: bool = True) -> None:
        """Register and beat in a thread; with `pull`, take commands from the agent's
        subscription (a pushed agent gets them over HTTP instead: `tether.agent.push`)."""
        if pull:
            self._sub = self.bus.subscribe_commands(self.agent_id, self.handle)
        self.bus.publish_event({"type": "register", **self._identity()})
        self._threads = [
            threading.Thread(target=self._heartbeats, name="agent-heartbeat", daemon=True),
            threading.Thread(target=self._ack_slow_commands, name="agent-acks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self.bus.publish_event({"type": "heartbeat", "timestamp": now, **self._identity()})
            except Exception:
                log.exception("heartbeat failed")

    def _ack_slow_commands(self) -> None:
        """Ack each command still running `ack_after` seconds after it arrived, long before
        the sweeper would publish it again. One that finishes sooner is never acked: its
        result says the same, and most commands save a message and a store write."""
        while not self._stop.wait(self.ack_after / 2):
            now = time.monotonic()
            with self._in_flight_lock:
                due = [(c, e) for c, (e, t) in self._unacked.items() if now - t >= self.ack_after]
                for command_id, _ in due:
                    del self._unacked[command_id]
            for command_id, epoch in due:
                try:
                    self.bus.publish_event(
                        {"type": "command_ack", "agent_id": self.agent_id,
                         "command_id": command_id, "epoch": epoch, "status": "acknowledged"}
                    )  # fmt: skip
                except Exception:
                    log.exception("ack of %s failed", command_id)

    def stop(self) -> None:
        self._stop.set()
        if self._sub is not None:
            self._sub.close()
        for thread in self._threads:  # a heartbeat or ack under way ends before the bus does
            thread.join(timeout=30)

    # -- commands ----------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if msg.attributes.get("agent_id") not in (None, self.agent_id):
            return  # not ours: Pub/Sub filters are not enforced by the emulator
        data = msg.data
        if data.get("type") == "register_ack":
            self.registered.set()
            return
        if data.get("type") != "command":
            log.warning("ignoring message of type %r", data.get("type"))
            return
        command_id = str(data["command_id"])
        session_id = data.get("session_id")
        kind = CommandType(data["command_type"])
        epoch = int(data.get("epoch", 1))
        with self._in_flight_lock:
            if command_id in self._in_flight:
                return  # a duplicate of a command this process is running right now
            self._in_flight.add(command_id)
        # The command's span, under the caller's (the message's `traceparent`; on the
        # in-process bus, the caller's own span, current on this thread).
        said = {
            "tether.command_id": command_id,
            "tether.command_type": kind.value,
            "tether.agent_id": self.agent_id,
            "messaging.operation.type": "process",
        }
        if session_id:
            said["tether.session_id"] = str(session_id)
        if msg.message_id:
            said["messaging.message.id"] = msg.message_id
        try:
            with (
                logs.bind(command_id=command_id, session_id=session_id,
                          **logs.trace_ids(msg.attributes)),
                tracing.span(f"agent {kind.value}", "consumer", said, msg.attributes),
            ):  # fmt: skip
                self._handle_command(command_id, session_id, kind, epoch, data)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(command_id)
                self._unacked.pop(command_id, None)

    def _handle_command(
        self,
        command_id: str,
        session_id: str | None,
        kind: CommandType,
        epoch: int,
        data: dict[str, Any],
    ) -> None:
        state, cached = self.journal.begin(command_id, session_id)
        if state == "done" and cached is not None:
            self.bus.publish_event(cached)  # a duplicate: report the same result again
            return
        if state == "started" and kind not in _RERUNNABLE:
            # Claimed before but not running here: an earlier agent process died mid-way.
            interrupted = "interrupted: the agent restarted"
            self._report(command_id, session_id, epoch, False, None, interrupted)
            return
        with self._in_flight_lock:
            self._unacked[command_id] = (epoch, time.monotonic())
        # Lifecycle commands of one session run one at a time; execs and log reads run freely.
        lock = self._session_locks[session_id or command_id] if kind in _RERUNNABLE else None
        reply_to = data.get("reply_to")
        started = time.monotonic()
        try:
            with lock or contextlib.nullcontext():
                result = self._run(kind, session_id, data.get("data") or {})
        except TetherError as exc:
            log.info("%s %s failed: %s", kind.value, command_id, exc.message)
            tracing.failed(exc.message)
            self._report(command_id, session_id, epoch, False, None, exc.message, reply_to)
        except Exception as exc:
            log.exception("command %s failed", command_id)
            error = f"{type(exc).__name__}: {exc}"
            tracing.failed(error)
            self._report(command_id, session_id, epoch, False, None, error, reply_to)
        else:
            took = (time.monotonic() - started) * 1000
            log.info("%s %s done in %.0f ms", kind.value, command_id, took)
            self._report(command_id, session_id, epoch, True, result, None, reply_to)

    def _report(
        self,
        command_id: str,
        session_id: str | None,
        epoch: int,
        ok: bool,
        result: dict[str, Any] | None,
        error: str | None,
        reply_to: str | None = None,
    ) -> None:
        event = {
            "type": "command_result",
            "agent_id": self.agent_id,
            "command_id": command_id,
            "epoch": epoch,
            "status": "completed" if ok else "failed",
            "result": result,
            "error": error,
        }
        if reply_to:  # the inbox of the process waiting for it (`Bus.expect_reply`)
            event["reply_to"] = reply_to
        # Published before it is journalled, and journalled once the answer to a request that
        # waited for it has been sent: the journal's copy is only for a duplicate of the command.
        # A crash in between makes a redelivery report "interrupted", which the control plane
        # ignores for a final command.
        self.bus.publish_event(event)
        later(lambda: self.journal.finish(command_id, session_id, event))

    def _run(
        self, kind: CommandType, session_id: str | None, data: dict[str, Any]
    ) -> dict[str, Any]:
        if kind is CommandType.DESKTOP:
            if self.desktop is None:
                raise TetherError(f"agent {self.agent_id} is not a desktop agent")
            return self.desktop.run(data)
        if kind is CommandType.KUBECTL:
            if self.kubectl is None:
                raise TetherError(f"agent {self.agent_id} is not a cluster agent")
            argv = [str(a) for a in data["argv"]]
            return self.kubectl.run(argv, float(data["timeout"]), int(data["cap"]))
        if session_id is None:
            raise TetherError("command without session_id")
        p = self.provisioner
        if kind is CommandType.EXEC:
            return p.exec(
                session_id, str(data["command"]), float(data.get("timeout", 120))
            ).model_dump()
        if kind is CommandType.STOP_SESSION:
            self.journal.mark_stopped(session_id)
            p.stop(session_id)
            return {}
        if self.journal.was_stopped(session_id):
            # A start or wake that arrives after the stop (no ordering on the bus) must not
            # bring the workspace back.
            raise TetherError(f"session {session_id} was stopped")
        if kind is CommandType.CHECK_IDLE:
            # Only the workspace's word on itself; the control plane decides what it means.
            found = p.activity(session_id)
            return {"activity": found.model_dump(mode="json") if found is not None else None}
        if kind is CommandType.GET_LOGS:
            return {"lines": p.logs(session_id, int(data.get("tail", 100)))}
        if kind is CommandType.HIBERNATE_SESSION:
            if data.get("persistent_home", True):
                p.hibernate(session_id)
            else:
                p.stop(session_id)  # nothing to keep: free it all, wake starts afresh
            return {}
        spec = WorkspaceSpec(
            session_id=session_id,
            template=Template.model_validate(data["template"]),
            namespace=str(data.get("namespace", "default")),
            user=str(data.get("user", "default")),
            persistent_home=bool(data.get("persistent_home", True)),
        )
        if kind is CommandType.WAKE_SESSION:
            try:
                return p.wake(session_id).model_dump()
            except NotFound:  # never started (created hibernated) or its home was not kept
                return p.start(spec).model_dump()
        return p.start(spec).model_dump()
