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
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core.lifecycle import (
    FINAL_COMMAND_STATES,
    LIVE_SESSION_STATES,
    CommandState,
    SessionState,
)
from tether.core.models import (
    Agent,
    CommandType,
    Desktop,
    DesktopSession,
    Principal,
    Session,
    Vnc,
    utcnow,
)
from tether.core.ports import Filter, Store
from tether.desktop import pactl
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
from tether.service.agents import Agents
from tether.service.commands import Commands
from tether.service.ratelimit import RateLimits
from tether.service.repo import Repo
from tether.service.sessions import Sessions

SESSION_KIND = "desktop_sessions"
DESKTOP_KIND = "desktops"
PLATFORM = "desktop"
TTL_DEFAULT, TTL_MIN, TTL_MAX = 900, 60, 3600
MAX_SESSIONS_DEFAULT = 1  # the real agent's default (MaxSessions)
# How long a request waits for the agent's answer: the HA integration gives up at 10 s.
ANSWER_WAIT = 8.0
# Token-validation failures a client address may make a minute (the document's "Security").
ADMIT_FAILURES = 5
NOT_FOUND = "Not Found"
# What an agent id or a session id may be (they name documents): anything else is unknown.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A desktop workspace as a desktop: its one display, the HA ids it admits (the integration's
# default), its sessions at once.
WORKSPACE_MONITOR = "DISPLAY1"
WORKSPACE_HA_IDS = ("home-assistant",)
WORKSPACE_MAX_SESSIONS = 4
WORKSPACE_VERSION = "1.0.0"  # an unknown agent and another user's answer alike
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
    # Tether's own desktop workspaces (sessions of a template with a desktop) are desktops
    # too, under their session ids: streamed by their runtimes (`tether.runtime.desktop`).
    workspaces: Sessions | None = None

    def __post_init__(self) -> None:
        self.sessions = Repo(self.store, SESSION_KIND, DesktopSession)
        self.owners = Repo(self.store, DESKTOP_KIND, Desktop)

    # -- agents ------------------------------------------------------------------------------

    def find(self, agent_id: str) -> Agent:
        """A desktop agent, or a desktop workspace as one (`_as_agent`), whoever asks
        (/api/v1/health is public)."""
        if not ID.fullmatch(agent_id):
            raise NotFound(NOT_FOUND, field="agent_id")
        agent = self.agents.repo.find(agent_id)
        if agent is not None and agent.platform == PLATFORM:
            return agent
        workspace = self._workspace(agent_id)
        if workspace is None:
            raise NotFound(NOT_FOUND, field="agent_id")
        return self._as_agent(workspace)

    def desktop(self, principal: Principal, agent_id: str) -> Agent:
        """A desktop agent its owner (or an admin) may use; anyone else's is NotFound, as an
        unknown one is. One nobody has claimed yet is an admin's only. A workspace is its
        session's owner's."""
        agent = self.find(agent_id)
        if not principal.is_admin:
            said = info(agent)
            owner = said.get("owner") if said.get("workspace") else None
            if owner is None:
                claimed = self.owners.find(agent_id)
                owner = claimed.owner if claimed is not None else None
            if owner != principal.id:
                raise NotFound(NOT_FOUND, field="agent_id")
        return agent

    def online(self, agent: Agent) -> bool:
        """Its heartbeats come in time and its tunnel to the relay is up (the relay's record
        of it: at once, where the agent's own word comes with its next beat); a workspace
        while it runs."""
        said = info(agent)
        if said.get("workspace"):
            return bool(said["remote_desktop"]["is_running"])
        if not self.agents.is_online(agent):
            return False
        found = self.owners.find(agent.id)
        return found is not None and found.tunnel is not None

    # -- desktop workspaces --------------------------------------------------------------------

    def _workspace(self, session_id: str) -> Session | None:
        """A live session with a desktop, by id."""
        if self.workspaces is None or not session_id:
            return None
        found = self.workspaces.repo.find(session_id)
        live = found is not None and found.vnc and found.state in LIVE_SESSION_STATES
        return found if live else None

    def workspace(self, session_id: str) -> Session | None:
        """The running desktop workspace the relay dials for a viewer of `session_id`."""
        found = self._workspace(session_id)
        return found if found is not None and found.state is SessionState.RUNNING else None

    def _as_agent(self, workspace: Session) -> Agent:
        """A desktop workspace described as a desktop agent describes itself (not stored)."""
        assert self.workspaces is not None
        try:
            resolution = self.workspaces.templates.get(workspace.template).vnc.resolution
        except NotFound:  # its template deleted since: the default display
            resolution = Vnc().resolution
        width, _, height = resolution.partition("x")
        running = workspace.state is SessionState.RUNNING
        state = "desktop" if running else "unknown"
        monitor = {"id": WORKSPACE_MONITOR, "name": "Xvfb", "width": int(width),
                   "height": int(height), "is_primary": True}  # fmt: skip
        said = {
            "workspace": True,
            "owner": workspace.owner,
            "version": WORKSPACE_VERSION,
            "started_at": (workspace.started_at or workspace.created_at).isoformat(),
            "remote_desktop": {
                "is_running": running,
                "last_frame_at": None,
                "state": state,
                "desktop_state": state,
                "degraded": False,
            },
            "monitors": [monitor],
            "current_monitor_id": WORKSPACE_MONITOR,
            "allowed_ha_ids": list(WORKSPACE_HA_IDS),
            "max_sessions": WORKSPACE_MAX_SESSIONS,
        }
        return Agent(id=workspace.id, platform=PLATFORM, details={"openctrol": said})

    def _workspace_action(
        self, principal: Principal, agent: Agent, action: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """What a desktop agent's commands do, on a desktop workspace: power is its session's
        (restart: hibernate and wake, keeping its home; shutdown: hibernate), monitors its one
        display, audio its own sound server's."""
        assert self.workspaces is not None
        said = info(agent)
        if action == "monitors":
            return {"monitors": said["monitors"], "current_monitor_id": WORKSPACE_MONITOR}
        if action == "monitor_select":
            if fields.get("monitor_id") != WORKSPACE_MONITOR:
                raise NotFound(f"Monitor ID '{fields.get('monitor_id')}' not found",
                               field="monitor_id")  # fmt: skip
            return {"monitor_id": WORKSPACE_MONITOR}
        if action == "shutdown":
            self.workspaces.hibernate(principal, agent.id, wait=0)
            return {"status": "ok", "action": action}
        if action == "restart":
            self.workspaces.hibernate(principal, agent.id, wait=self.answer_wait / 2)
            self.workspaces.wake(principal, agent.id, wait=0)
            return {"status": "ok", "action": action}
        return self._workspace_audio(principal, agent.id, action, fields)

    def _workspace_audio(
        self, principal: Principal, session_id: str, action: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Its own sound server's devices and streams, through `pactl` run in it."""
        assert self.workspaces is not None
        device = str(fields.get("device_id", ""))
        if action == "audio_state":
            line, what = pactl.STATE, "sound server"
        elif action == "audio_device":
            line = pactl.set_device(device, fields.get("volume"), fields.get("muted"))
            if fields.get("set_default"):
                line += " && " + pactl.set_default(device)
            what = f"audio device '{device}'"
        elif action == "audio_default":
            line, what = pactl.set_default(device), f"audio device '{device}'"
        elif action == "audio_session":
            stream = str(fields.get("session_id", ""))
            line = pactl.set_session(stream, fields.get("volume"), fields.get("muted"),
                                     fields.get("output_device_id"))  # fmt: skip
            what = f"audio session '{stream}'"
        else:
            raise Unsupported(f"A desktop workspace has no action '{action}'")
        done = self.workspaces.execute(principal, session_id, line, timeout=self.answer_wait / 2)
        if not done.success:
            raise pactl.failed(done.stderr, what)
        return pactl.state(done.stdout) if action == "audio_state" else {}

    def claim(self, principal: Principal, agent_id: str, tunnel: str) -> None:
        """The relay's tunnel for `agent_id` (its connection `tunnel`) dialled with
        `principal`'s key: its user owns the agent from the first connection on, and the
        tunnel is up. Another user's tunnel for it is Forbidden (an admin's is let through,
        the owner unchanged). An id that is not one (`ID`), or is a Tether session's (its
        desktop is the workspace's), is refused."""
        if not ID.fullmatch(agent_id):
            raise Invalid("An agent id is 1-128 letters, digits, '.', '_' or '-'",
                          field="agent_id")  # fmt: skip
        if self.workspaces is not None and self.workspaces.repo.find(agent_id) is not None:
            raise Forbidden(f"{agent_id} is a session's id, not an agent's", field="agent_id")
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

    def live(self, session_id: str) -> bool:
        """Whether a desktop session is still open and unexpired (the relay's watch)."""
        found = self.sessions.find(session_id)
        return found is not None and found.open and found.expires_at > utcnow()

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
            workspace=bool(said.get("workspace")),
        )
        return self.sessions.create(session.id, session), token

    def end(self, principal: Principal, agent_id: str, session_id: str) -> None:
        """End a session and tell the agent to close its streams (not waited for). An unknown
        session, or another user's, is left as it is (the real agent answers 200 alike)."""
        self.desktop(principal, agent_id)
        found = self.sessions.find(session_id) if ID.fullmatch(session_id) else None
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
        if not found.workspace:  # the relay ends a workspace's viewers itself
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
        if self.limits.count(key) >= ADMIT_FAILURES:
            raise RateLimited("Too many invalid session tokens; try again later")
        session = self.sessions.find(session_id) if ID.fullmatch(session_id) else None
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

    # -- commands ----------------------------------------------------------------------------

    def ask(
        self, principal: Principal, agent_id: str, action: str, **fields: Any
    ) -> dict[str, Any]:
        """Send the agent a `desktop` command and wait for its result (ANSWER_WAIT at most).
        A failure the agent names the kind of is raised as that error, with its field."""
        agent = self.desktop(principal, agent_id)
        if info(agent).get("workspace"):
            return self._workspace_action(principal, agent, action, fields)
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
