"""Session use cases: create, read, list, execute, delete; apply agents' results."""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from tether.core.lifecycle import SessionState, check_session_move
from tether.core.models import (
    Command,
    CommandType,
    ExecResult,
    Principal,
    Session,
    SessionRequest,
    utcnow,
)
from tether.core.ports import Store
from tether.errors import InvalidTransition, NotFound, Timeout, Unavailable
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.repo import Repo
from tether.service.templates import Templates

log = logging.getLogger(__name__)

DEFAULT_TTL_MINUTES = 60
# Time an agent gets on top of a command's own timeout before we stop waiting for it.
AGENT_MARGIN = 15.0
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def new_session_id(namespace: str, user: str) -> str:
    def part(s: str) -> str:
        return _UNSAFE.sub("-", s.lower()).strip("-")[:20] or "x"

    return f"ws-{part(namespace)}-{part(user)}-{int(time.time())}-{secrets.token_hex(2)}"


# What a successful command moves its session from and to.
_AFTER: dict[CommandType, tuple[SessionState, SessionState]] = {
    CommandType.START_SESSION: (SessionState.PENDING, SessionState.RUNNING),
    CommandType.WAKE_SESSION: (SessionState.WAKING, SessionState.RUNNING),
    CommandType.HIBERNATE_SESSION: (SessionState.HIBERNATING, SessionState.HIBERNATED),
    CommandType.STOP_SESSION: (SessionState.TERMINATING, SessionState.TERMINATED),
}


@dataclass
class Sessions:
    store: Store
    commands: Commands
    agents: Agents
    templates: Templates

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "sessions", Session)

    # -- reads -------------------------------------------------------------------------------

    def get(self, principal: Principal, session_id: str) -> Session:
        session = self.repo.find(session_id)
        if session is None or not (principal.is_admin or session.owner == principal.id):
            raise NotFound("Session not found")  # another user's session is not found, too
        return session

    def visible(
        self,
        principal: Principal,
        namespace: str | None = None,
        user: str | None = None,
        include_terminated: bool = False,
    ) -> list[Session]:
        where: list[tuple[str, str, object]] = []
        if not principal.is_admin:
            where.append(("owner", "==", principal.id))
        if namespace:
            where.append(("namespace", "==", namespace))
        if user:
            where.append(("user", "==", user))
        sessions = self.repo.query(where)  # type: ignore[arg-type]
        if not include_terminated:
            sessions = [s for s in sessions if s.state is not SessionState.TERMINATED]
        return sorted(sessions, key=lambda s: s.created_at)

    # -- writes ------------------------------------------------------------------------------

    def create(self, principal: Principal, req: SessionRequest, wait: float = 60.0) -> Session:
        template = self.templates.get(req.template)
        agent = self.agents.pick(req.provider, req.prefer)
        now = utcnow()
        ttl = None if req.long_lived else (req.ttl_minutes or DEFAULT_TTL_MINUTES)
        session = Session(
            id=new_session_id(req.namespace, req.user),
            owner=principal.id,
            template=template.name,
            platform=agent.platform,
            agent_id=agent.id,
            namespace=req.namespace,
            user=req.user,
            long_lived=req.long_lived,
            expires_at=now + timedelta(minutes=ttl) if ttl else None,
            message="Session provisioning in progress...",
        )
        self.repo.create(session.id, session)
        self.commands.issue(
            agent.id,
            CommandType.START_SESSION,
            session.id,
            {
                "name": session.id,
                "namespace": req.namespace,
                "user": req.user,
                "template": template.doc(),
                "persistent_home": req.persistent_home,
            },
        )
        return self.wait_while(session.id, {SessionState.PENDING}, wait)

    def wait_while(self, session_id: str, states: set[SessionState], timeout: float) -> Session:
        """Wait until the session leaves `states` (or `timeout` passes); returns it."""
        deadline = time.monotonic() + timeout
        session = self.repo.get(session_id, "Session")
        while session.state in states and (remaining := deadline - time.monotonic()) > 0:
            changed = self.repo.watch(session_id, session.version, remaining)
            if changed is None:
                raise NotFound("Session not found")
            session = changed
        return session

    def usable(self, principal: Principal, session_id: str) -> Session:
        session = self.get(principal, session_id)
        if session.expired(utcnow()):
            raise InvalidTransition(f"Session {session_id} has expired")
        if session.state is not SessionState.RUNNING:
            raise InvalidTransition(f"Session {session_id} is {session.state.value}, not running")
        return session

    def execute(
        self, principal: Principal, session_id: str, command: str, timeout: float
    ) -> ExecResult:
        session = self.usable(principal, session_id)
        issued = self.commands.issue(
            session.agent_id,
            CommandType.EXEC,
            session.id,
            {"command": command, "timeout": timeout},
        )
        done = self.commands.wait(issued.id, timeout + AGENT_MARGIN)
        if done.result is not None and done.state.value == "succeeded":
            return ExecResult.model_validate(done.result)
        if done.state.value == "failed":
            raise Unavailable(f"Command could not run: {done.error or 'agent error'}")
        raise Timeout(f"Agent {session.agent_id} did not answer within {timeout + AGENT_MARGIN}s")

    def delete(self, principal: Principal, session_id: str, wait: float = 30.0) -> Session:
        session = self.get(principal, session_id)
        if session.state is SessionState.TERMINATED:
            return session
        self.terminate(session_id, "Session deleted")
        return self.wait_while(session_id, {SessionState.TERMINATING}, wait)

    def terminate(self, session_id: str, message: str) -> Session:
        """Move to terminating and tell the agent to stop the workspace (idempotent)."""

        def move(s: Session) -> Session | None:
            if s.state in (SessionState.TERMINATING, SessionState.TERMINATED):
                return None
            check_session_move(s.state, SessionState.TERMINATING)
            s.state, s.message, s.updated_at = SessionState.TERMINATING, message, utcnow()
            return s

        before = self.repo.get(session_id, "Session")
        session = self.repo.mutate(session_id, move)
        if before.state is not SessionState.TERMINATING and session.version != before.version:
            self.commands.issue(
                session.agent_id,
                CommandType.STOP_SESSION,
                session.id,
                {"name": session.id, "namespace": session.namespace, "graceful": True},
            )
        return session

    # -- results from agents -----------------------------------------------------------------

    def apply_result(self, command: Command) -> None:
        """Move the command's session on from a final result. Idempotent: applying the same
        result twice, or one the session has moved past, changes nothing."""
        if command.session_id is None or command.type not in _AFTER:
            return
        expected, target = _AFTER[command.type]
        ok = command.state.value == "succeeded"
        result = command.result or {}

        def move(s: Session) -> Session | None:
            if s.state is not expected:
                return None
            s.updated_at = utcnow()
            if ok:
                s.state = target
                s.message = ""
                if "url" in result:
                    s.url = result["url"]
                s.details.update(result.get("details") or {})
            else:
                s.state = SessionState.FAILED
                s.message = command.error or "agent reported a failure"
            return s

        if self.repo.find(command.session_id) is None:
            return
        self.repo.mutate(command.session_id, move)

    def expire(self) -> list[str]:
        """Terminate every session whose TTL has passed; returns their ids."""
        now = utcnow()
        ended = []
        for session in self.repo.query([("expires_at", "<=", now)]):
            if session.state in (SessionState.TERMINATING, SessionState.TERMINATED):
                continue
            self.terminate(session.id, "Session expired")
            ended.append(session.id)
        return ended
