"""Domain records. pydantic v2 models are the one schema for stored documents and API shapes."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from tether.core.durations import parse_duration
from tether.core.layout import VNC_SOCKET as VNC_SOCKET  # where templates and runtime meet
from tether.core.lifecycle import CommandState, SessionState
from tether.errors import Invalid


def utcnow() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    """A stored document. `version` is the store's compare-and-set counter, not a stored field."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(default=0, exclude=True)

    def doc(self) -> dict[str, Any]:
        # Python mode keeps datetimes (stores order them as instants). Enum fields are StrEnums:
        # every store writes them as their plain string values.
        return self.model_dump(mode="python")


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class Principal(BaseModel):
    """Who is calling: derived from the credential, never from a request body."""

    model_config = ConfigDict(frozen=True)  # one may serve many requests (`Auth`'s key cache)

    id: str
    username: str
    role: Role = Role.USER
    # What the credential was checked against, so it can be checked again while it is used
    # (an open terminal, a ticket redeemed later): the user's incarnation and credential
    # version, and the API key it came with, if any.
    uid: str = ""
    version: int = 0
    key_id: str | None = None
    token_id: str | None = None  # a JWT's jti (a sign-out revokes it)
    until: datetime | None = None  # a JWT's expiry
    read_only: bool = False  # a read-only API key: no changes

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @classmethod
    def of(cls, user: User, **credential: Any) -> Principal:
        """`user` as a caller, with what their credential adds (key_id, token_id, ...)."""
        return cls(id=user.id, username=user.username, role=user.role, uid=user.uid,
                   version=user.credentials_version, **credential)  # fmt: skip


def _incarnation() -> str:
    return secrets.token_hex(8)


class User(Record):
    id: str  # the username
    username: str
    # Never reused: a user deleted and made again under the same name is another incarnation,
    # and nothing issued to the first (a JWT, an API key) works for the second.
    uid: str = Field(default_factory=_incarnation)
    # Moves on a deactivation, a reactivation and a password change: JWTs carry it, and one
    # issued before the move is refused.
    credentials_version: int = 0
    email: str | None = None
    full_name: str | None = None
    role: Role = Role.USER
    active: bool = True
    password_hash: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_login: datetime | None = None
    # Template name -> when it was marked (StreamSpace's web UI shows favourites first).
    favorites: dict[str, datetime] = Field(default_factory=dict)


KeyScope = Literal["full", "read"]


class ApiKey(Record):
    id: str  # the lookup prefix shown in the key
    owner: str  # user id
    owner_uid: str = ""  # the owner's incarnation (empty: made before incarnations were kept)
    key_hash: str
    name: str = "default"
    scope: KeyScope = "full"  # read: GET and HEAD only
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Vnc(BaseModel):
    enabled: bool = False
    port: int = 5900
    resolution: str = "1280x800"
    color_depth: int = 24


class Template(Record):
    name: str
    display_name: str
    description: str = ""
    category: str = "general"
    image: str = "python:3.11-slim"
    # Shell command the local platform runs as the workspace's main process, beside the
    # runtime (none: exec only). Its output is the session's log.
    command: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    vnc: Vnc = Field(default_factory=Vnc)
    resources: dict[str, str] = Field(default_factory=lambda: {"cpu": "1000m", "memory": "1Gi"})
    # What the workspace's network reaches: "none" is a loopback of its own; "egress" is the
    # outside, never the host, the control plane or the metadata server.
    network: Literal["none", "egress"] = "none"
    # "gvisor": a user-space kernel between the workspace and the host (GKE Sandbox's
    # RuntimeClass; runsc locally). "default": namespaces, seccomp and cgroups.
    sandbox: Literal["default", "gvisor"] = "default"
    persistent_home: bool = True
    idle_timeout: str | None = None
    tags: list[str] = Field(default_factory=list)
    icon_url: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AgentStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DRAINING = "draining"


class Agent(Record):
    id: str
    platform: str
    region: str = "local"
    status: AgentStatus = AgentStatus.ONLINE
    capacity: int = 10
    epoch: int = 1  # bumped on every (re)registration
    registered_at: datetime = Field(default_factory=utcnow)
    last_heartbeat: datetime = Field(default_factory=utcnow)
    # What the agent says of itself with each beat, for its surface (a desktop agent's
    # display state, monitors and HA-id allowlist); the latest beat's replaces it.
    details: dict[str, Any] = Field(default_factory=dict)


class CommandType(StrEnum):
    START_SESSION = "start_session"
    STOP_SESSION = "stop_session"
    HIBERNATE_SESSION = "hibernate_session"
    WAKE_SESSION = "wake_session"
    EXEC = "exec"
    GET_LOGS = "get_logs"
    KUBECTL = "kubectl"  # to a cluster agent: payload {argv, timeout, cap, operation_id}
    DESKTOP = "desktop"  # to a desktop agent (Openctrol): payload {action, ...}
    # Whether a session due for idle hibernation is idle after all: its agent asks the
    # workspace (result {"activity": WorkspaceActivity | None}; `Sessions.idle_checked`).
    CHECK_IDLE = "check_idle"


class Command(Record):
    id: str
    agent_id: str
    session_id: str | None = None
    type: CommandType
    payload: dict[str, Any] = Field(default_factory=dict)
    state: CommandState = CommandState.PENDING
    epoch: int = 1  # lease epoch: a result from an older lease is rejected
    result: dict[str, Any] | None = None
    error: str | None = None
    publish_count: int = 0
    # Handed to an executor over HTTP until then (`Commands.lease`): not published again before.
    leased_until: datetime | None = None
    reply_to: str | None = None  # the inbox of the process waiting for it (`Bus.expect_reply`)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None  # then the sweeper (and Firestore's TTL) deletes it


# What counts as a session's activity, by where it came from: a call of the API, a command,
# an open terminal or desktop, a file moved, traffic to one of its ports, a process it runs.
ActivitySource = Literal["api", "exec", "terminal", "desktop", "files", "port", "process"]


class Session(Record):
    id: str
    owner: str  # principal id from the credential
    template: str
    platform: str
    agent_id: str
    namespace: str = "default"
    user: str = "default"  # a label for grouping, not an identity
    state: SessionState = SessionState.PENDING
    message: str = ""
    url: str | None = None
    slot: str | None = None  # the agent's capacity it holds (`Agents.reserve`)
    details: dict[str, Any] = Field(default_factory=dict)
    long_lived: bool = False
    expires_at: datetime | None = None
    # Set when it is terminated: then the store deletes it (the sweeper, Firestore's TTL).
    purge_at: datetime | None = None
    name: str = ""
    resources: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    persistent_home: bool = True
    idle_timeout: str | None = None  # e.g. "30m": hibernate after that long without activity
    vnc: bool = False  # its template has a desktop to view
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    last_activity: datetime = Field(default_factory=utcnow)
    last_activity_source: ActivitySource = "api"  # what that activity was: why it is alive
    # When the sweeper last asked its agent whether it is idle (`Sessions.hibernate_idle`):
    # not asked again until the answer comes, or `sessions.IDLE_CHECK_WAIT` passes without one.
    idle_check_at: datetime | None = None
    # The expiry warning (tether.service.warnings): where it is posted (none: the session's
    # events only), the secret its body is signed with (shown once, at create), how long
    # before a deadline it comes (None or 0: never), and the deadline last warned for.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    warn_minutes: float | None = None
    warned_for: datetime | None = None

    def deadline(self) -> tuple[datetime, Literal["ttl", "idle"]] | None:
        """The next thing that ends or stops it, and which: its TTL, or its idle timeout
        (a running one), whichever comes first. None: neither (ended, or long-lived and
        never idle)."""
        ttl = self.expires_at if self.state in WARNED_STATES else None
        idle = self.idle_at
        if idle is not None and (ttl is None or idle < ttl):
            return idle, "idle"
        return (ttl, "ttl") if ttl is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warn_at(self) -> datetime | None:
        """When the sweeper warns of the next deadline; None once that one has been warned of
        (an extend moves it, and so arms the warning again). Stored, so the sweeper asks the
        store for the sessions due, not for every live one."""
        due = self.deadline()
        if due is None or not self.warn_minutes or due[0] == self.warned_for:
            return None
        return due[0] - warning_window(self, due[1])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def idle_at(self) -> datetime | None:
        """When a running session with an idle timeout falls due to hibernate. Stored with
        it, so the sweeper asks the store for the sessions due, not for every running one."""
        if self.state is not SessionState.RUNNING or not self.idle_timeout:
            return None
        try:
            return self.last_activity + parse_duration(self.idle_timeout, "idle_timeout")
        except Invalid:
            return None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


# States whose TTL is warned of: a session someone may still want (not one ending or failed).
WARNED_STATES = (SessionState.RUNNING, SessionState.HIBERNATED)


def warning_window(session: Session, reason: Literal["ttl", "idle"]) -> timedelta:
    """How long before its deadline a session is warned. For the idle timeout, at most half
    of it: every activity moves that deadline, and a window as long as the timeout would warn
    after every one."""
    window = timedelta(minutes=session.warn_minutes or 0)
    if reason == "idle" and session.idle_timeout:  # (an idle deadline: a timeout that parses)
        window = min(window, parse_duration(session.idle_timeout, "idle_timeout") / 2)
    return window


class ExecResult(BaseModel):
    stdout: str = ""
    stderr: str = ""
    returncode: int
    success: bool
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0


class WorkspaceSpec(BaseModel):
    """What a provisioner needs to start one session's workspace."""

    session_id: str
    template: Template
    namespace: str = "default"
    user: str = "default"
    persistent_home: bool = True
    env: dict[str, str] = Field(default_factory=dict)


class WorkspaceInfo(BaseModel):
    url: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RunningWork(BaseModel):
    execs: int = Field(0, ge=0)
    processes: int = Field(0, ge=0)


class WorkspaceActivity(BaseModel):
    """What a workspace's runtime says it is doing (`GET /activity`): busy while an exec or a
    background process runs; the last real work it saw (terminal bytes, port traffic, file
    transfers, a command's start or end) and of what kind. The workspace's own words: read
    as a claim about itself, never trusted further."""

    model_config = ConfigDict(extra="ignore")

    busy: bool = False
    running: RunningWork = Field(default_factory=RunningWork)
    last_activity_at: datetime | None = None
    last_activity_source: Literal["exec", "terminal", "files", "port", "process"] | None = None


class SessionRequest(BaseModel):
    """A request for a new session, whatever surface it came through."""

    provider: str = "auto"
    template: str
    namespace: str = "default"
    user: str = "default"
    ttl_minutes: int | None = None
    long_lived: bool = False
    persistent_home: bool | None = None  # None: the template's default
    resources: dict[str, str] = Field(default_factory=dict)
    idle_timeout: str | None = None  # None: the template's default
    tags: list[str] = Field(default_factory=list)
    webhook_url: str | None = None  # where its expiry warning is posted (checked by the surface)
    warn_minutes: float | None = None  # None: the deployment's TETHER_EXPIRY_WARNING; 0: never
    # With provider "auto", agent platforms to try first (the legacy Cloud Run API prefers
    # cloud_run, falling back to whatever agent is online).
    prefer: tuple[str, ...] = ()


# -- Kubently: clusters, debug sessions, kubectl runs ------------------------------------------


class DebugStatus(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    EXPIRED = "expired"
    ENDED = "ended"


class DebugSession(Record):
    """A Kubently debug session: a time-boxed grant to run read commands on one cluster."""

    id: str
    owner: str
    cluster_id: str
    user_id: str | None = None  # the caller's label for who it acts for (not an identity)
    correlation_id: str | None = None
    service_identity: str | None = None
    ttl_seconds: int
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    last_activity: datetime | None = None
    command_count: int = 0
    ended_at: datetime | None = None
    open: bool = True  # not ended (what a query filters on: no store matches a null alike)
    purge_at: datetime | None = None  # then the store deletes it

    def status(self, now: datetime, idle_after: float) -> DebugStatus:
        if self.ended_at is not None:
            return DebugStatus.ENDED
        if self.expires_at <= now:
            return DebugStatus.EXPIRED
        last = self.last_activity or self.created_at
        idle = (now - last).total_seconds() >= idle_after
        return DebugStatus.IDLE if idle else DebugStatus.ACTIVE


class RunState(StrEnum):
    """A kubectl run's state, in Kubently's words (its ExecutionStatus, and the gate's)."""

    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    DENIED = "denied"  # an admin refused it at the approval gate
    FORBIDDEN = "forbidden"  # the command policy refused it: kept for the audit trail


FINAL_RUN_STATES = frozenset(
    {RunState.SUCCESS, RunState.FAILURE, RunState.TIMEOUT, RunState.DENIED, RunState.FORBIDDEN}
)


class KubectlRun(Record):
    """One kubectl command asked of a cluster: Kubently's async operation and its audit
    entry in one record (who, cluster, argv, correlation id, state, duration)."""

    id: str
    owner: str
    username: str = ""
    cluster_id: str
    session_id: str | None = None
    argv: list[str]
    verb: str = ""
    namespace: str | None = None
    correlation_id: str | None = None
    service_identity: str | None = None
    timeout: float = 10.0
    state: RunState = RunState.PENDING
    command_id: str | None = None  # the agent command carrying it, once issued
    output: str | None = None
    error: str | None = None
    exit_code: int | None = None
    truncated: bool = False
    execution_time_ms: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    decided_by: str | None = None  # the admin who approved or denied it
    decided_at: datetime | None = None
    expires_at: datetime | None = None  # the audit retention


class ClusterToken(Record):
    """The credential of a cluster's third-party Kubently executors (one a cluster, stored
    under the cluster's id, as a hash)."""

    id: str
    cluster_id: str
    token_hash: str
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    last_used: datetime | None = None


class ApprovalRules(Record):
    """What needs an admin's approval before it runs (the one `kubently_policy` record)."""

    verbs: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    updated_by: str = ""
    updated_at: datetime = Field(default_factory=utcnow)

    def needs_approval(self, verb: str, namespace: str | None, all_namespaces: bool) -> bool:
        # A command over all namespaces reads the gated ones too.
        gated = namespace in self.namespaces or (all_namespaces and bool(self.namespaces))
        return verb in self.verbs or gated


# -- Openctrol: desktop agents and their remote-desktop sessions -------------------------------


class DesktopSession(Record):
    """An Openctrol remote-desktop session: a TTL-bound grant whose token (kept only as its
    sha256) opens the agent's desktop stream through the relay, as often as the session lives
    (the Home Assistant integration reconnects with the same URL)."""

    id: str  # uuid4
    agent_id: str
    owner: str  # principal id of the key that made it
    ha_id: str
    token_hash: str  # sha256 hex of the token
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    ended_at: datetime | None = None
    open: bool = True  # not ended (what a query filters on: no store matches a null alike)
    purge_at: datetime | None = None  # then the store deletes it
    # Of a desktop workspace (its runtime streams it), not of an agent's tunnel: the relay
    # never hands its viewers to a tunnel, whatever id one dials with.
    workspace: bool = False


class Desktop(Record):
    """Who owns a desktop agent: the user whose key its relay tunnel first dialled with
    (`Desktops.claim`); stored under the agent's id."""

    id: str  # the agent id
    owner: str  # principal id
    claimed_at: datetime = Field(default_factory=utcnow)
    # The relay connection its tunnel is up on (None: down), written by the relay as the
    # tunnel comes and goes: health says at once what the agent's heartbeats say late.
    tunnel: str | None = None
