"""Openctrol's use cases: desktop agents (who owns one, what it says of itself), their
remote-desktop sessions and tokens, and the `desktop` commands the REST surface sends them.

The contract with the agent and the relay is /work/notes/openctrol-design.md: the agent's
heartbeat `details["openctrol"]` (version, display state, monitors, HA-id allowlist, session
limit), the `desktop` command's actions and their `failure` results, and the two calls the
relay makes (`claim`, the agent's tunnel; `admit`, a client's WebSocket handshake).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core.lifecycle import FINAL_COMMAND_STATES, CommandState
from tether.core.models import Agent, CommandType, Desktop, DesktopSession, Principal, utcnow
from tether.core.ports import Filter, Store
from tether.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TetherError,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from tether.service import ratelimit
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.ratelimit import RateLimits
from tether.service.repo import Repo

SESSION_KIND = "desktop_sessions"
DESKTOP_KIND = "desktops"
PLATFORM = "desktop"
TTL_DEFAULT, TTL_MIN, TTL_MAX = 900, 60, 3600
MAX_SESSIONS_DEFAULT = 1  # the real agent's default (MaxSessions)
# How long a request waits for the agent's answer: the HA integration gives up at 10 s.
ANSWER_WAIT = 8.0
# Token-validation failures a client address may make a minute (the document's "Security").
ADMIT_FAILURES = 5
NOT_FOUND = "Not Found"  # an unknown agent and another user's answer alike
_FAILURES: dict[str, type[TetherError]] = {
    "not_found": NotFound,
    "invalid": Invalid,
    "unavailable": Unavailable,
    "unsupported": Unsupported,
}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def info(agent: Agent) -> dict[str, Any]:
    """What a desktop agent says of itself (its heartbeat's `details["openctrol"]`)."""
    found = agent.details.get("openctrol")
    return found if isinstance(found, dict) else {}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class DesktopHealth:
    agent_id: str
    version: str
    uptime_seconds: int
    is_running: bool
    last_frame_at: str | None
    state: str
    desktop_state: str
    degraded: bool
    active_sessions: int


@dataclass
class Desktops:
    store: Store
    agents: Agents
    commands: Commands
    limits: RateLimits
    session_retention: timedelta = timedelta(days=7)
    answer_wait: float = ANSWER_WAIT

    def __post_init__(self) -> None:
        self.sessions = Repo(self.store, SESSION_KIND, DesktopSession)
        self.owners = Repo(self.store, DESKTOP_KIND, Desktop)

    # -- agents ------------------------------------------------------------------------------

    def find(self, agent_id: str) -> Agent:
        """A desktop agent, whoever asks (/api/v1/health is public)."""
        agent = self.agents.repo.find(agent_id) if agent_id else None
        if agent is None or agent.platform != PLATFORM:
            raise NotFound(NOT_FOUND, field="agent_id")
        return agent

    def desktop(self, principal: Principal, agent_id: str) -> Agent:
        """A desktop agent its owner (or an admin) may use; anyone else's is NotFound, as an
        unknown one is. One nobody has claimed yet is an admin's only."""
        agent = self.find(agent_id)
        if not principal.is_admin:
            owner = self.owners.find(agent_id)
            if owner is None or owner.owner != principal.id:
                raise NotFound(NOT_FOUND, field="agent_id")
        return agent

    def online(self, agent: Agent) -> bool:
        """Its heartbeats come in time and its tunnel to the relay is up (the relay's record
        of it: at once, where the agent's own word comes with its next beat)."""
        if not self.agents.is_online(agent):
            return False
        found = self.owners.find(agent.id)
        return found is not None and found.tunnel is not None

    def claim(self, principal: Principal, agent_id: str, tunnel: str) -> None:
        """The relay's tunnel for `agent_id` (its connection `tunnel`) dialled with
        `principal`'s key: its user owns the agent from the first connection on, and the
        tunnel is up. Another user's tunnel for it is Forbidden (an admin's is let through,
        the owner unchanged)."""
        if self.owners.find(agent_id) is None:
            with contextlib.suppress(Conflict):  # claimed at the same moment: checked below
                self.owners.create(
                    agent_id, Desktop(id=agent_id, owner=principal.id, tunnel=tunnel)
                )
                return

        def up(d: Desktop) -> Desktop:
            if d.owner != principal.id and not principal.is_admin:
                raise Forbidden(
                    f"Desktop agent {agent_id} belongs to another user", field="agent_id"
                )
            d.tunnel = tunnel
            return d

        self.owners.mutate(agent_id, up)

    def disconnected(self, agent_id: str, tunnel: str) -> None:
        """The relay's connection `tunnel` of the agent ended (a newer one stays up)."""

        def down(d: Desktop) -> Desktop | None:
            if d.tunnel != tunnel:
                return None
            d.tunnel = None
            return d

        with contextlib.suppress(NotFound):
            self.owners.mutate(agent_id, down)

    def live_sessions(self, agent_id: str) -> int:
        """The agent's sessions not yet over: a bounded count query."""
        where: list[Filter] = [
            ("agent_id", "==", agent_id),
            ("open", "==", True),
            ("expires_at", ">", utcnow()),
        ]
        return self.sessions.count(where)

    def health(self, agent_id: str) -> DesktopHealth:
        """What /api/v1/health reports: the agent's own word while it is online and its tunnel
        up, else not running and degraded (HA shows it offline)."""
        agent = self.find(agent_id)
        said = info(agent)
        rd = said.get("remote_desktop")
        rd = rd if isinstance(rd, dict) else {}
        up = self.online(agent)
        started = _time(said.get("started_at"))
        uptime = max(0, int((utcnow() - started).total_seconds())) if started and up else 0
        last = rd.get("last_frame_at")
        return DesktopHealth(
            agent_id=agent.id,
            version=str(said.get("version") or "unknown"),
            uptime_seconds=uptime,
            is_running=up and rd.get("is_running") is True,
            last_frame_at=last if isinstance(last, str) else None,
            state=str(rd.get("state") or "unknown") if up else "unknown",
            desktop_state=str(rd.get("desktop_state") or "unknown") if up else "unknown",
            degraded=not up or rd.get("degraded") is not False,
            active_sessions=self.live_sessions(agent.id),
        )

    # -- sessions ----------------------------------------------------------------------------

    def open(
        self, principal: Principal, agent_id: str, ha_id: str, ttl_seconds: float | None
    ) -> tuple[DesktopSession, str]:
        """A new session and its token (returned once; stored only as its hash). The TTL is
        clamped to 60-3600 s (900 when not given)."""
        agent = self.desktop(principal, agent_id)
        if not self.online(agent):
            raise Unavailable(f"Desktop agent {agent_id} is offline")
        said = info(agent)
        allowed = said.get("allowed_ha_ids")
        if not isinstance(allowed, list) or ha_id not in allowed:  # empty denies (the document)
            raise Unauthenticated(f"HA ID '{ha_id}' is not allowed on this agent", field="ha_id")
        most = said.get("max_sessions")
        most = most if isinstance(most, int) and most > 0 else MAX_SESSIONS_DEFAULT
        if self.live_sessions(agent_id) >= most:
            # The text the HA integration looks for to reuse the session it stored.
            raise Conflict(
                f"Maximum sessions limit ({most}) reached",
                code="session_creation_failed",
            )
        ttl = TTL_DEFAULT if ttl_seconds is None else int(ttl_seconds)
        ttl = min(TTL_MAX, max(TTL_MIN, ttl))
        token = secrets.token_urlsafe(32)
        now = utcnow()
        session = DesktopSession(
            id=str(uuid.uuid4()),
            agent_id=agent_id,
            owner=principal.id,
            ha_id=ha_id,
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            purge_at=now + timedelta(seconds=ttl) + self.session_retention,
        )
        return self.sessions.create(session.id, session), token

    def end(self, principal: Principal, agent_id: str, session_id: str) -> None:
        """End a session and tell the agent to close its streams (not waited for). An unknown
        session, or another user's, is left as it is (the real agent answers 200 alike)."""
        self.desktop(principal, agent_id)
        found = self.sessions.find(session_id)
        if (
            found is None
            or found.agent_id != agent_id
            or (found.owner != principal.id and not principal.is_admin)
            or found.ended_at is not None
        ):
            return

        def close(s: DesktopSession) -> DesktopSession | None:
            if s.ended_at is not None:
                return None
            s.ended_at, s.open = utcnow(), False
            s.purge_at = s.ended_at + self.session_retention
            return s

        self.sessions.mutate(found.id, close, start=found)
        payload = {"action": "end_session", "session_id": found.id}
        self.commands.issue(agent_id, CommandType.DESKTOP, None, payload)

    def admit(
        self, agent_id: str, session_id: str | None, token: str | None, client_address: str
    ) -> DesktopSession:
        """A client's WebSocket handshake (`?sess=&token=`): its live session. The token opens
        it as often as the session lives. Failures are counted per client address, and more
        than ADMIT_FAILURES a minute are refused before the token is even looked at."""
        if not session_id or not token:
            raise Invalid("Session ID and token are required", field="sess" if token else "token")
        key = f"openctrol:admit:{client_address}"
        if self._failures(key) >= ADMIT_FAILURES:
            raise RateLimited("Too many invalid session tokens; try again later")
        session = self.sessions.find(session_id)
        if (
            session is None
            or not session.open
            or session.expires_at <= utcnow()
            or not hmac.compare_digest(session.token_hash, token_hash(token))
        ):
            self.limits.hit(key, ADMIT_FAILURES)
            raise Unauthenticated("Invalid or expired session token")
        if session.agent_id != agent_id:
            raise NotFound("Session not found", field="sess")
        return session

    def _failures(self, key: str) -> int:
        """The failures counted for `key` in the current window, without counting one (the
        document `RateLimits.hit` keeps, read as it names it)."""
        window = self.limits.window
        start = int(time.time()) // window * window
        doc = self.store.get(ratelimit.KIND, f"{key}@{start}".replace("/", "_"))
        return int(doc.data.get("count", 0)) if doc is not None else 0

    # -- commands ----------------------------------------------------------------------------

    def ask(
        self, principal: Principal, agent_id: str, action: str, **fields: Any
    ) -> dict[str, Any]:
        """Send the agent a `desktop` command and wait for its result (ANSWER_WAIT at most).
        A failure the agent names the kind of is raised as that error, with its field."""
        agent = self.desktop(principal, agent_id)
        if not self.agents.is_online(agent):
            raise Unavailable(f"Desktop agent {agent_id} is offline")
        payload = {"action": action, **fields}
        issued = self.commands.issue(agent_id, CommandType.DESKTOP, None, payload, awaited=True)
        final = self.commands.wait(issued, self.answer_wait)
        if final.state not in FINAL_COMMAND_STATES:
            raise Unavailable(f"desktop agent {agent_id} did not answer")
        if final.state is not CommandState.SUCCEEDED:
            raise Unavailable(final.error or f"desktop agent {agent_id} failed")
        result = final.result or {}
        failure = result.get("failure")
        if isinstance(failure, dict):
            kind = _FAILURES.get(str(failure.get("kind")), Unavailable)
            field = failure.get("field")
            message = str(failure.get("message") or "The desktop agent refused")
            raise kind(message, field=field if isinstance(field, str) else None)
        return result
