"""StreamSpace v2 surface under `/api/v1`: auth, users, agents, templates, sessions.

Errors are `{error, message, code, details, timestamp, request_id}`; every response carries
the rate-limit headers. Auth is `Authorization: Bearer <JWT or API key>`.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from werkzeug.wrappers import Request, Response

from tether import bootstrap, errors
from tether.core.durations import DURATION, parse_duration
from tether.core.lifecycle import SessionState
from tether.core.models import (
    Agent,
    AgentStatus,
    ApiKey,
    KeyScope,
    Principal,
    Role,
    Session,
    SessionRequest,
    Template,
    User,
    Vnc,
    utcnow,
)
from tether.service.tokens import looks_like_jwt
from tether.surfaces import openapi
from tether.surfaces.http import (
    Router,
    client_address,
    iso,
    json_response,
    may,
    proxy_matcher,
    public_details,
    request_id,
)
from tether.surfaces.http import caller as who

T = TypeVar("T")
PREFIX = "/api/v1"
NAMESPACE = "streamspace"  # where every StreamSpace session and template lives

# Codes for errors raised without one, by class (most specific first), and their titles.
_DEFAULT_CODES: list[tuple[type[errors.TetherError], str]] = [
    (errors.InvalidTransition, "INVALID_STATE_TRANSITION"),
    (errors.Invalid, "VALIDATION_FAILED"),
    (errors.Unauthenticated, "AUTH_TOKEN_INVALID"),
    (errors.Forbidden, "AUTH_INSUFFICIENT_PERMISSIONS"),
    (errors.NotFound, "NOT_FOUND"),
    (errors.Conflict, "CONFLICT"),
    (errors.RateLimited, "RATE_LIMIT_EXCEEDED"),
    (errors.Unavailable, "SERVICE_UNAVAILABLE"),
    (errors.Timeout, "TIMEOUT"),
]
_TITLES = {
    "AUTH_INVALID_CREDENTIALS": "Authentication failed",
    "AUTH_TOKEN_EXPIRED": "Token expired",
    "AUTH_TOKEN_INVALID": "Invalid token",
    "AUTH_TOKEN_MISSING": "Authentication required",
    "AUTH_INSUFFICIENT_PERMISSIONS": "Insufficient permissions",
    "SESSION_NOT_FOUND": "Session not found",
    "AGENT_NOT_FOUND": "Agent not found",
    "TEMPLATE_NOT_FOUND": "Template not found",
    "USER_EXISTS": "User already exists",
    "INVALID_STATE_TRANSITION": "Invalid state transition",
    "NO_AGENTS_AVAILABLE": "No agents available",
    "AGENT_CAPACITY_EXCEEDED": "Agent capacity exceeded",
    "RATE_LIMIT_EXCEEDED": "Rate limit exceeded",
    "VALIDATION_FAILED": "Invalid request",
    "MISSING_REQUIRED_FIELD": "Missing required field",
    "INVALID_PARAMETER": "Invalid parameter",
    "SESSION_TERMINATING": "Session is terminating",
    "TEMPLATE_EXISTS": "Template already exists",
    "SESSION_NOT_RUNNING": "Session not running",
    "AGENT_HAS_SESSIONS": "Agent has live sessions",
    "TEMPLATE_IN_USE": "Template in use",
    "APPLICATION_NOT_FOUND": "Application not found",
    "QUOTA_NOT_FOUND": "Quota not found",
}
# Where StreamSpace's status for an error differs from the shared mapping.
_STATUS_BY_CODE = {"INVALID_STATE_TRANSITION": 400}


def code_of(error: errors.TetherError) -> str:
    code = error.details.get("code")
    if isinstance(code, str):
        return code
    return next((c for cls, c in _DEFAULT_CODES if isinstance(error, cls)), "INTERNAL_ERROR")


class Error(BaseModel):
    """Every StreamSpace error."""

    error: str
    message: str
    code: str
    details: dict[str, Any]
    timestamp: str
    request_id: str
    retry_after: int | None = None


def render_error(error: errors.TetherError, status: int) -> Response:
    code = code_of(error)
    status = _STATUS_BY_CODE.get(code, status)
    details = {k: v for k, v in error.details.items() if k != "code"}
    if error.field:
        details["field"] = error.field
    body: dict[str, Any] = {
        "error": _TITLES.get(code, error.message if status < 500 else "Internal server error"),
        "message": error.message,
        "code": code,
        "details": details,
        "timestamp": iso(utcnow()),
        "request_id": request_id(),
    }
    if isinstance(error, errors.RateLimited):
        body["retry_after"] = error.details.get("retry_after")
    return json_response(body, status)


router = Router(render_error, owner=lambda request: who(request).id)


# -- request plumbing: who, rate limits -------------------------------------------------------


def admin(request: Request) -> Principal:
    principal = who(request)
    if not principal.is_admin:
        raise errors.Forbidden("This requires the admin role", code="AUTH_INSUFFICIENT_PERMISSIONS")
    return principal


def _bucket(request: Request) -> str:
    path = request.path[len(PREFIX) :]
    if path.rstrip("/") == "/auth/login":
        return "login"
    if path.rstrip("/") == "/sessions" and request.method == "POST":
        return "create"
    return "api"


def handle(request: Request) -> Response:
    """Route with a rate limit per principal (per client address before authentication; the
    peer address, never a forwarding header a client could write)."""
    services = bootstrap.services()
    bucket = _bucket(request)
    limit = services.settings.rate_limits[bucket]
    try:
        subject = f"user:{who(request).id}" if bucket != "login" else ""
    except errors.TetherError:
        subject = ""
    trusted = proxy_matcher(services.settings.trusted_proxies)
    subject = subject or f"addr:{client_address(request, trusted)}"
    try:
        quota = services.limits.hit(f"{bucket}:{subject}", limit)
    except errors.TetherError as exc:  # the store is away: 503, as the call itself would be
        return router.refusal(exc)
    if not quota.allowed:
        wait = quota.retry_after
        response = render_error(
            errors.RateLimited(
                f"Too many requests. Please try again in {wait} seconds.", retry_after=wait
            ),
            429,
        )
        response.headers["Retry-After"] = str(wait)
    else:
        response = router(request)
    response.headers.update(quota.headers())
    return response


class Page(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    limit: int = Field(20, ge=1, le=100)


class Pagination(BaseModel):
    page: int
    limit: int
    total: int
    total_pages: int

    @classmethod
    def of(cls, page: Page, total: int) -> Pagination:
        pages = max(1, math.ceil(total / page.limit))
        return cls(page=page.page, limit=page.limit, total=total, total_pages=pages)


def paginate(items: list[T], page: Page) -> tuple[list[T], Pagination]:
    chunk = items[(page.page - 1) * page.limit : page.page * page.limit]
    return chunk, Pagination.of(page, len(items))


class Message(BaseModel):
    message: str


ADMIN = (403,)  # what an operation for admins answers anyone else


# -- auth -------------------------------------------------------------------------------------


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


# StreamSpace's web UI (ui/src/lib/api.ts) reads camelCase names where the reference document
# has snake_case ones: answers carry both, and bodies accept both.


class UserOut(BaseModel):
    id: str
    username: str
    email: str | None
    full_name: str = Field(description="The username until one is set")
    role: Role
    active: bool
    created_at: str | None
    last_login: str | None
    # The web UI's names.
    fullName: str
    provider: Literal["local"]
    createdAt: str | None
    lastLogin: str | None


class LoggedIn(BaseModel):
    token: str
    user: UserOut
    expires_at: str | None
    expiresAt: str | None  # the web UI's name


def user_json(u: User) -> UserOut:
    created, last = iso(u.created_at), iso(u.last_login)
    return UserOut(
        id=u.id,
        username=u.username,
        email=u.email,
        full_name=u.full_name or u.username,
        role=u.role,
        active=u.active,
        created_at=created,
        last_login=last,
        fullName=u.full_name or u.username,
        provider="local",
        createdAt=created,
        lastLogin=last,
    )


@router.route(f"{PREFIX}/auth/login", ["POST"], body=Login, answers={200: LoggedIn}, public=True,
              errors=(401,))  # fmt: skip
def login(request: Request, body: Login) -> Response:
    """Sign in with a username and password: a JWT for 24 hours."""
    return signed_in(bootstrap.services().users.login(body.username, body.password))


def signed_in(user: User) -> Response:
    """A new JWT for `user`, as a sign-in answers it."""
    token, expires = bootstrap.services().tokens.issue(user)
    when = iso(expires)
    return json_response(LoggedIn(token=token, user=user_json(user), expires_at=when,
                                  expiresAt=when))  # fmt: skip


@router.route(f"{PREFIX}/auth/logout", ["POST"], answers={200: Message})
def logout(request: Request) -> Response:
    """Revoke the JWT the request carries (an API key stays valid)."""
    who(request)
    _, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if looks_like_jwt(token):  # a JWT: revoke it; an API key stays valid
        bootstrap.services().tokens.revoke(token.strip())
    return json_response({"message": "Logout successful"})


# -- users ------------------------------------------------------------------------------------


class UserFilter(Page):
    role: Role | None = None


EMAIL = r"^[^@\s]+@[^@\s]+$"
# The web UI's name for it too (its user forms send `fullName`).
FULL_NAME = AliasChoices("full_name", "fullName")


class NewUser(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    email: str | None = Field(None, pattern=EMAIL, max_length=254)
    password: str = Field(min_length=8, max_length=1024)
    role: Role = Role.USER
    full_name: str | None = Field(None, max_length=128, validation_alias=FULL_NAME)


class UserList(BaseModel):
    users: list[UserOut]
    pagination: Pagination
    total: int  # the web UI's count


@router.route(f"{PREFIX}/users", ["GET"], query=UserFilter, answers={200: UserList}, errors=ADMIN)
def list_users(request: Request, query: UserFilter) -> Response:
    """Users, a page at a time (admins)."""
    admin(request)
    users, total = bootstrap.services().users.page(query.role, query.page, query.limit)
    return json_response(UserList(users=[user_json(u) for u in users],
                                  pagination=Pagination.of(query, total), total=total))  # fmt: skip


@router.route(f"{PREFIX}/users", ["POST"], body=NewUser, answers={201: UserOut},
              errors=(*ADMIN, 409), idempotent=True)  # fmt: skip
def create_user(request: Request, body: NewUser) -> Response:
    """Add a user (admins)."""
    admin(request)
    user = bootstrap.services().users.create(
        body.username, body.password, body.role, body.email, body.full_name
    )
    return json_response(user_json(user), 201)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    role: Role | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)
    # The web UI's edit form sends these back with every change; "" clears one.
    email: str | None = Field(None, pattern=f"^$|{EMAIL}", max_length=254)
    full_name: str | None = Field(None, max_length=128, validation_alias=FULL_NAME)


USER = f"{PREFIX}/users/<segment('me'):username>"


@router.route(USER, ["GET"], answers={200: UserOut}, errors=ADMIN)
def get_user(request: Request, username: str) -> Response:
    """One user (admins)."""
    admin(request)
    return json_response(user_json(bootstrap.services().users.get(username)))


@router.route(USER, ["PATCH"], body=UserPatch, answers={200: UserOut}, errors=(*ADMIN, 409))
def patch_user(request: Request, username: str, body: UserPatch) -> Response:
    """Deactivate or reactivate a user, change their role, password, email or full name
    (admins). A deactivation, a reactivation or a new password ends every JWT issued before
    it; an inactive user's API keys are refused while it lasts."""
    caller = admin(request)
    user = bootstrap.services().users.update(
        caller, username, active=body.active, role=body.role, password=body.password,
        email=body.email, full_name=body.full_name,
    )  # fmt: skip
    return json_response(user_json(user))


@router.route(USER, ["DELETE"], answers={204: None}, errors=(*ADMIN, 409))
def delete_user(request: Request, username: str) -> Response:
    """Delete a user and every API key of theirs (admins); their JWTs stop working at once,
    even if a user of the same name is made later."""
    bootstrap.services().auth.delete_user(admin(request), username)
    return Response(status=204)


@router.route(f"{PREFIX}/users/me", ["GET"], answers={200: UserOut})
def get_me(request: Request) -> Response:
    """The caller."""
    return json_response(user_json(bootstrap.services().users.get(who(request).id)))


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", min_length=1, max_length=64)
    scope: KeyScope = "full"
    expires_at: datetime | None = Field(None, description="ISO 8601 with a time zone")


class KeyOut(BaseModel):
    id: str
    name: str
    scope: KeyScope
    expires_at: str | None
    created_at: str | None


class KeyMade(KeyOut):
    key: str = Field(description="The key itself: shown this once, never again")


class KeyList(BaseModel):
    api_keys: list[KeyOut]


def key_json(k: ApiKey) -> KeyOut:
    return KeyOut(id=k.id, name=k.name, scope=k.scope, expires_at=iso(k.expires_at),
                  created_at=iso(k.created_at))  # fmt: skip


@router.route(f"{PREFIX}/api-keys", ["POST"], body=NewKey, answers={201: KeyMade},
              errors=(409, 422))  # fmt: skip
def create_key(request: Request, body: NewKey) -> Response:
    """A new API key for the caller: full or read-only, with an optional expiry."""
    caller = who(request)
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise errors.Invalid("expires_at needs a time zone (Z or +hh:mm)", field="expires_at")
    record, key = bootstrap.services().auth.new_key(
        caller.id, body.name, body.scope, body.expires_at
    )
    return json_response(KeyMade(**key_json(record).model_dump(), key=key), 201)


@router.route(f"{PREFIX}/api-keys", ["GET"], answers={200: KeyList})
def list_keys(request: Request) -> Response:
    """The caller's API keys (never the keys themselves)."""
    keys = bootstrap.services().auth.keys_of(who(request).id)
    return json_response(KeyList(api_keys=[key_json(k) for k in keys]))


@router.route(f"{PREFIX}/api-keys/<key_id>", ["DELETE"], answers={204: None})
def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke one of the caller's API keys (an admin: anyone's): refused from now on."""
    bootstrap.services().auth.revoke_key(who(request), key_id)
    return Response(status=204)


# -- agents -----------------------------------------------------------------------------------


class AgentFilter(Page):
    platform: str | None = None
    status: AgentStatus | None = None
    region: str | None = None


class AgentPatch(BaseModel):
    status: Literal["online", "draining"]


class Capacity(BaseModel):
    max_sessions: int
    current_sessions: int


class AgentCapacity(Capacity):
    active_sessions: int  # the web UI's names
    maxSessions: int


class AgentOut(BaseModel):
    id: str
    agent_id: str
    platform: str
    region: str
    status: AgentStatus
    capacity: AgentCapacity
    metadata: dict[str, Any]
    last_heartbeat: str | None
    created_at: str | None
    updated_at: str | None
    # The web UI's names (its admin page and the shell tests read these).
    agentId: str
    lastHeartbeat: str | None
    createdAt: str | None
    updatedAt: str | None
    approvalStatus: Literal["approved"]  # Tether's agents are trusted by their credential


class AgentSession(BaseModel):
    id: str
    name: str | None
    user: str | None
    template: str | None
    state: str | None


class AgentDetail(AgentOut):
    uptime_seconds: int
    sessions: list[AgentSession]


class AgentList(BaseModel):
    agents: list[AgentOut]
    pagination: Pagination
    # The web UI's paging.
    total: int
    page: int
    limit: int


class AdminAgentFilter(AgentFilter):
    """The web UI's admin listing: every agent is approved in Tether, so `approval_status`
    other than "approved" lists none."""

    approval_status: Literal["approved", "pending", "rejected"] | None = None


class Utilization(BaseModel):
    percentage: float
    sessions_available: int


class AgentStats(BaseModel):
    total_agents: int
    online_agents: int
    offline_agents: int
    draining_agents: int
    by_platform: dict[str, int]
    total_capacity: Capacity
    utilization: Utilization


class AgentPatched(BaseModel):
    id: str
    agent_id: str
    status: AgentStatus
    updated_at: str | None


def agent_json(a: Agent, current: int) -> AgentOut:
    beat, made = iso(a.last_heartbeat), iso(a.registered_at)
    return AgentOut(
        id=a.id,
        agent_id=a.id,
        platform=a.platform,
        region=a.region,
        status=a.status,
        capacity=AgentCapacity(
            max_sessions=a.capacity,
            current_sessions=current,
            active_sessions=current,
            maxSessions=a.capacity,
        ),
        metadata={"epoch": a.epoch},
        last_heartbeat=beat,
        created_at=made,
        updated_at=beat,
        agentId=a.id,
        lastHeartbeat=beat,
        createdAt=made,
        updatedAt=beat,
        approvalStatus="approved",
    )


def _standing(a: Agent) -> Agent:
    """The agent with the status its heartbeats give it now."""
    return a.model_copy(update={"status": bootstrap.services().agents.status_of(a)})


def _agents() -> list[tuple[Agent, int]]:
    """Every agent as it stands, and its sessions."""
    agents = bootstrap.services().agents
    return [(_standing(a), agents.live_sessions(a.id)) for a in agents.repo.query(order_by="id")]


def _agent_list(query: AgentFilter) -> AgentList:
    rows = [
        agent_json(a, n)
        for a, n in _agents()
        if (not query.platform or a.platform == query.platform)
        and (not query.status or a.status is query.status)
        and (not query.region or a.region == query.region)
    ]
    items, pagination = paginate(rows, query)
    return AgentList(agents=items, pagination=pagination, total=pagination.total,
                     page=query.page, limit=query.limit)  # fmt: skip


@router.route(f"{PREFIX}/agents", ["GET"], query=AgentFilter, answers={200: AgentList})
def list_agents(request: Request, query: AgentFilter) -> Response:
    """Agents, filtered by platform, status or region."""
    who(request)
    return json_response(_agent_list(query))


@router.route(f"{PREFIX}/admin/agents", ["GET"], query=AdminAgentFilter,
              answers={200: AgentList}, errors=ADMIN)  # fmt: skip
def admin_list_agents(request: Request, query: AdminAgentFilter) -> Response:
    """Agents, for the web UI's admin page (admins)."""
    admin(request)
    if query.approval_status not in (None, "approved"):
        return json_response(AgentList(agents=[], pagination=Pagination.of(query, 0), total=0,
                                       page=query.page, limit=query.limit))  # fmt: skip
    return json_response(_agent_list(query))


@router.route(f"{PREFIX}/admin/agents/<agent_id>/approve", ["POST"], answers={200: Message},
              errors=ADMIN)  # fmt: skip
def approve_agent(request: Request, agent_id: str) -> Response:
    """Approve an agent (admins): Tether's agents are approved by their credential already."""
    admin(request)
    agent = bootstrap.services().agents.repo.get(agent_id, "Agent")
    return json_response(Message(message=f"Agent {agent.id} is approved"))


@router.route(f"{PREFIX}/admin/agents/<agent_id>/reject", ["POST"], answers={200: Message},
              errors=(*ADMIN, 409))  # fmt: skip
def reject_agent(request: Request, agent_id: str) -> Response:
    """Reject an agent (admins): refused, since an agent's credential is what admits it;
    drain it instead (PATCH /api/v1/agents/{id} with status "draining")."""
    admin(request)
    agent = bootstrap.services().agents.repo.get(agent_id, "Agent")
    raise errors.Conflict(
        f"Agent {agent.id} was admitted by its credential; drain it with PATCH "
        f'{PREFIX}/agents/{agent.id} {{"status": "draining"}} instead',
        field="agent_id",
    )


class AgentRemoved(BaseModel):
    message: str
    agentId: str  # as StreamSpace's server answers


@router.route(f"{PREFIX}/admin/agents/<agent_id>", ["DELETE"], answers={200: AgentRemoved},
              errors=(*ADMIN, 409))  # fmt: skip
def remove_agent(request: Request, agent_id: str) -> Response:
    """Deregister an agent (admins; the web UI's Remove): 409 while it has sessions that are
    not terminated. An agent still running registers again with its next heartbeat."""
    admin(request)
    bootstrap.services().agents.deregister(agent_id)
    return json_response(AgentRemoved(message="Agent deregistered successfully", agentId=agent_id))


@router.route(f"{PREFIX}/agents/stats", ["GET"], answers={200: AgentStats})
def agent_stats(request: Request) -> Response:
    """Agents counted by status and platform, and their capacity in use."""
    who(request)
    rows = _agents()
    by_status = {s: sum(1 for a, _ in rows if a.status is s) for s in AgentStatus}
    by_platform: dict[str, int] = {}
    for a, _ in rows:
        by_platform[a.platform] = by_platform.get(a.platform, 0) + 1
    usable = [(a, n) for a, n in rows if a.status is AgentStatus.ONLINE]
    max_sessions = sum(a.capacity for a, _ in usable)
    current = sum(n for _, n in rows)
    return json_response(
        AgentStats(
            total_agents=len(rows),
            online_agents=by_status[AgentStatus.ONLINE],
            offline_agents=by_status[AgentStatus.OFFLINE],
            draining_agents=by_status[AgentStatus.DRAINING],
            by_platform=by_platform,
            total_capacity=Capacity(max_sessions=max_sessions, current_sessions=current),
            utilization=Utilization(
                percentage=round(100 * current / max_sessions, 1) if max_sessions else 0.0,
                sessions_available=max(0, max_sessions - sum(n for _, n in usable)),
            ),
        )
    )


@router.route(f"{PREFIX}/agents/<segment('stats'):agent_id>", ["GET"], answers={200: AgentDetail})
def get_agent(request: Request, agent_id: str) -> Response:
    """One agent, and the caller's sessions on it (every session, for an admin)."""
    caller = who(request)
    agents = bootstrap.services().agents
    agent = _standing(agents.repo.get(agent_id, "Agent"))
    sessions = agents.sessions_of(agent_id)
    # The count is the agent's; the sessions listed are only the caller's (all for an admin).
    mine = [
        AgentSession(**{k: s.get(k) for k in ("id", "name", "user", "template", "state")})
        for s in sessions
        if caller.is_admin or s.get("owner") == caller.id
    ]
    uptime = int((utcnow() - agent.registered_at).total_seconds())
    out = agent_json(agent, len(sessions))
    return json_response(AgentDetail(**out.model_dump(), uptime_seconds=uptime, sessions=mine))


@router.route(f"{PREFIX}/agents/<segment('stats'):agent_id>", ["PATCH"], body=AgentPatch,
              answers={200: AgentPatched}, errors=ADMIN)  # fmt: skip
def patch_agent(request: Request, agent_id: str, body: AgentPatch) -> Response:
    """Drain an agent (it takes no new sessions) or bring it back online (admins)."""
    admin(request)
    agent = bootstrap.services().agents.set_status(agent_id, AgentStatus(body.status))
    return json_response(
        AgentPatched(id=agent.id, agent_id=agent.id, status=agent.status,
                     updated_at=iso(utcnow()))
    )  # fmt: skip


# -- templates --------------------------------------------------------------------------------


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: str | None = Field(None, pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$")
    cpu: str | None = Field(None, pattern=r"^[0-9]+m?$")


class TemplateFilter(Page):
    limit: int = Field(50, ge=1, le=100)
    category: str | None = None


class TemplateOut(BaseModel):
    id: str
    name: str
    display_name: str
    category: str
    description: str
    base_image: str
    default_resources: dict[str, Any]
    vnc: Vnc
    environment: dict[str, str]
    network: str
    sandbox: str
    persistent_home: bool
    idle_timeout: str | None
    tags: list[str]
    icon_url: str | None
    created_at: str | None
    updated_at: str | None
    # The web UI's names.
    displayName: str
    baseImage: str
    defaultResources: dict[str, Any]
    appType: Literal["desktop", "webapp"]
    icon: str | None
    namespace: str
    createdAt: str | None
    updatedAt: str | None


class TemplateList(BaseModel):
    templates: list[TemplateOut]
    pagination: Pagination
    total: int  # the web UI's count


def template_json(t: Template) -> TemplateOut:
    created, updated = iso(t.created_at), iso(t.updated_at)
    return TemplateOut(
        id=t.name,
        name=t.name,
        display_name=t.display_name,
        category=t.category,
        description=t.description,
        base_image=t.image,
        default_resources=t.resources,
        vnc=t.vnc,
        environment=t.env,
        network=t.network,
        sandbox=t.sandbox,
        persistent_home=t.persistent_home,
        idle_timeout=t.idle_timeout,
        tags=t.tags,
        icon_url=t.icon_url,
        created_at=created,
        updated_at=updated,
        displayName=t.display_name,
        baseImage=t.image,
        defaultResources=t.resources,
        appType="desktop" if t.vnc.enabled else "webapp",
        icon=t.icon_url,
        namespace=NAMESPACE,
        createdAt=created,
        updatedAt=updated,
    )


@router.route(f"{PREFIX}/templates", ["GET"], query=TemplateFilter, answers={200: TemplateList})
def list_templates(request: Request, query: TemplateFilter) -> Response:
    """Templates, by category."""
    who(request)
    rows = [
        template_json(t)
        for t in bootstrap.services().templates.list()
        if not query.category or t.category == query.category
    ]
    items, pagination = paginate(rows, query)
    return json_response(TemplateList(templates=items, pagination=pagination,
                                      total=pagination.total))  # fmt: skip


@router.route(f"{PREFIX}/templates/<name>", ["GET"], answers={200: TemplateOut})
def get_template(request: Request, name: str) -> Response:
    """One template."""
    who(request)
    return json_response(template_json(bootstrap.services().templates.get(name)))


TEMPLATE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"


def either(*names: str) -> AliasChoices:
    """A body field under the reference document's name or StreamSpace's clients' (camelCase,
    or an older name): the first is the one the schema shows."""
    return AliasChoices(*names)


class TemplateBody(BaseModel):
    """A template as an admin writes it (the listing's field names, or the web UI's and shell
    tests': displayName, baseImage or image, defaultResources, env, icon)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=TEMPLATE_NAME, description="The path's, if given")
    display_name: str = Field(
        min_length=1, max_length=128, validation_alias=either("display_name", "displayName")
    )
    category: str = Field("general", max_length=64)
    description: str = Field("", max_length=4096)
    base_image: str = Field(
        "python:3.11-slim",
        min_length=1,
        max_length=512,
        validation_alias=either("base_image", "baseImage", "image"),
    )
    command: str | None = Field(None, max_length=16_384)
    default_resources: Resources = Field(
        default_factory=Resources,
        validation_alias=either("default_resources", "defaultResources"),
    )
    vnc: Vnc = Field(default_factory=Vnc)
    environment: dict[str, str] = Field(
        default_factory=dict, validation_alias=either("environment", "env")
    )
    network: Literal["none", "egress"] = "none"
    sandbox: Literal["default", "gvisor"] = "default"
    persistent_home: bool = Field(
        True, validation_alias=either("persistent_home", "persistentHome")
    )
    idle_timeout: str | None = Field(
        None, pattern=DURATION, validation_alias=either("idle_timeout", "idleTimeout")
    )
    tags: list[str] = Field(default_factory=list, max_length=32)
    icon_url: str | None = Field(
        None, max_length=2048, validation_alias=either("icon_url", "iconUrl", "icon")
    )
    # Sent by the web UI, and decided by Tether: the namespace is always StreamSpace's, and a
    # template is a desktop when its `vnc` is enabled.
    namespace: Literal["streamspace"] | None = None
    app_type: Literal["desktop", "webapp"] | None = Field(
        None, validation_alias=either("app_type", "appType")
    )

    def template(self, name: str) -> Template:
        return Template(
            name=name,
            display_name=self.display_name,
            category=self.category,
            description=self.description,
            image=self.base_image,
            command=self.command,
            resources=self.default_resources.model_dump(exclude_none=True),
            vnc=self.vnc,
            env=self.environment,
            network=self.network,
            sandbox=self.sandbox,
            persistent_home=self.persistent_home,
            idle_timeout=self.idle_timeout,
            tags=self.tags,
            icon_url=self.icon_url,
        )


class NewTemplate(TemplateBody):
    name: str = Field(pattern=TEMPLATE_NAME)  # type: ignore[assignment]


@router.route(f"{PREFIX}/templates", ["POST"], body=NewTemplate, answers={201: TemplateOut},
              errors=(*ADMIN, 409), idempotent=True)  # fmt: skip
def create_template(request: Request, body: NewTemplate) -> Response:
    """Add a template (admins)."""
    admin(request)
    template = bootstrap.services().templates.create(body.template(body.name))
    return json_response(template_json(template), 201)


@router.route(f"{PREFIX}/templates/<name>", ["PUT"], body=TemplateBody,
              answers={200: TemplateOut}, errors=(*ADMIN, 409))  # fmt: skip
def replace_template(request: Request, name: str, body: TemplateBody) -> Response:
    """Replace a template (admins). The body's name, if given, must be the path's."""
    admin(request)
    if body.name not in (None, name):
        raise errors.Invalid("The body's name must match the path", field="name")
    return json_response(template_json(bootstrap.services().templates.replace(body.template(name))))


@router.route(f"{PREFIX}/templates/<name>", ["DELETE"], answers={204: None},
              errors=(*ADMIN, 409))  # fmt: skip
def delete_template(request: Request, name: str) -> Response:
    """Remove a template (admins); 409 while a session that is not terminated uses it."""
    admin(request)
    bootstrap.services().templates.delete(name)
    return Response(status=204)


# -- sessions ---------------------------------------------------------------------------------

# StreamSpace's words for the core states (the core has a few more in-between states).
_PHASES = {
    SessionState.PENDING: "Pending",
    SessionState.RUNNING: "Running",
    SessionState.HIBERNATING: "Hibernating",
    SessionState.HIBERNATED: "Hibernated",
    SessionState.WAKING: "Waking",
    SessionState.TERMINATING: "Terminating",
    SessionState.TERMINATED: "Terminated",
    SessionState.FAILED: "Failed",
}
_DEFAULT_MESSAGES = {
    SessionState.RUNNING: "Session is running",
    SessionState.HIBERNATED: "Session hibernated successfully",
    SessionState.TERMINATED: "Session terminated",
}


MAX_SESSION_DURATION = timedelta(days=366)
MAX_TAG_FILTER = 30


class NewSession(BaseModel):
    """The reference document's fields, or the web UI's (persistentHome, idleTimeout,
    maxSessionDuration; it also sends name, namespace and applicationId)."""

    user: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    template: str | None = Field(
        None, min_length=1, max_length=63,
        description="Required unless applicationId names the application (a template) instead",
    )  # fmt: skip
    platform: str | None = Field(None, pattern=r"^[a-z_]{1,32}$")
    state: Literal["running", "hibernated"] = "running"
    resources: Resources = Field(default_factory=Resources)
    persistent_home: bool | None = Field(
        None, validation_alias=either("persistent_home", "persistentHome")
    )
    idle_timeout: str | None = Field(
        None, pattern=DURATION, validation_alias=either("idle_timeout", "idleTimeout")
    )
    max_session_duration: str | None = Field(
        None, pattern=DURATION, description="Terminated after this long (none: never)",
        validation_alias=either("max_session_duration", "maxSessionDuration"),
    )  # fmt: skip
    tags: list[str] = Field(default_factory=list, max_length=32)
    # The web UI's: Tether names sessions itself, in StreamSpace's one namespace.
    name: str | None = Field(None, max_length=253)
    namespace: Literal["streamspace"] | None = None
    application_id: str | None = Field(
        None, min_length=1, max_length=128,
        validation_alias=either("application_id", "applicationId"),
        description="The web UI's launch: an application's id (`/applications/user`)",
    )  # fmt: skip

    def template_name(self) -> str:
        if self.template:
            return self.template
        if self.application_id:
            return self.application_id  # an application is a template, named by its id
        raise errors.Invalid(
            "Either 'applicationId' or 'template' must be provided",
            field="template",
            code="MISSING_REQUIRED_FIELD",
        )

    def ttl_minutes(self) -> int | None:
        if self.max_session_duration is None:
            return None
        span = parse_duration(self.max_session_duration, "maxSessionDuration")
        if span > MAX_SESSION_DURATION:
            raise errors.Invalid("maxSessionDuration is at most 366d", field="maxSessionDuration")
        return max(1, math.ceil(span.total_seconds() / 60))


class SessionFilter(Page):
    user: str | None = None
    template: str | None = None
    platform: str | None = None
    agent_id: str | None = None
    state: SessionState | None = None
    tags: str | None = Field(None, max_length=4000)  # comma-separated: any of them
    sort: Literal["created_at", "updated_at", "user", "state"] = "created_at"
    order: Literal["asc", "desc"] = "desc"

    @property
    def tag_list(self) -> list[str]:
        return [t for t in (self.tags or "").split(",") if t]

    @field_validator("tags")
    @classmethod
    def _few_tags(cls, tags: str | None) -> str | None:
        if tags and len([t for t in tags.split(",") if t]) > MAX_TAG_FILTER:
            raise ValueError(f"at most {MAX_TAG_FILTER} tags")  # what one Firestore query takes
        return tags


class SessionPatch(BaseModel):
    state: Literal["running", "hibernated", "terminating", "terminated"]


class DeleteQuery(BaseModel):
    force: bool = False


class LogQuery(BaseModel):
    """(`follow=true` is the relay's, and not described here: a live stream, never this JSON
    answer. See `session_logs`.)"""

    tail: int = Field(100, ge=1, le=10_000)
    timestamps: bool = True


class SessionStatus(BaseModel):
    phase: Literal[
        "Pending", "Running", "Hibernating", "Hibernated", "Waking", "Terminating",
        "Terminated", "Failed",
    ]  # fmt: skip
    message: str
    pod_ip: str | None
    pod_name: str | None
    vnc_url: str | None
    started_at: str | None
    # The web UI's: it offers Connect only with a `url`.
    url: str | None
    podName: str | None
    lastActivity: str | None


class SessionOut(BaseModel):
    id: str
    name: str
    namespace: str
    user: str
    template: str
    platform: str
    agent_id: str | None
    state: SessionState
    resources: dict[str, Any]
    persistent_home: bool
    idle_timeout: str | None
    tags: list[str]
    status: SessionStatus
    platform_metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    last_activity: str | None
    # The web UI's names (ui/src/lib/api.ts `Session`).
    agentId: str | None
    persistentHome: bool
    idleTimeout: str | None
    maxSessionDuration: str | None
    createdAt: str | None
    updatedAt: str | None
    lastActivity: str | None
    activeConnections: int = Field(description="Not tracked by Tether: always 0")
    streamingProtocol: Literal["vnc"] | None
    streamingPort: int | None
    streamingPath: str | None


class SessionList(BaseModel):
    sessions: list[SessionOut]
    pagination: Pagination
    total: int  # the web UI's count


class SessionQuery(BaseModel):
    user: str = Field(min_length=1, max_length=128, description="Who connects (the web UI's)")


class Connected(BaseModel):
    """The web UI's connect answer: its viewer opens `sessionUrl` once `ready`."""

    connectionId: str
    sessionUrl: str
    state: SessionState
    ready: bool
    message: str


class ConnectionQuery(BaseModel):
    connectionId: str = Field(min_length=1, max_length=128)


class HeartbeatOk(BaseModel):
    status: Literal["ok"]


class Disconnected(BaseModel):
    message: str
    activeConnections: int


class Ticket(BaseModel):
    ticket: str
    session_id: str
    expires_at: str | None


class Logs(BaseModel):
    logs: list[str]


def viewer_url(s: Session) -> str | None:
    """Where its desktop is viewed, while it runs and has one."""
    return f"/vnc-viewer/{s.id}" if s.vnc and s.state is SessionState.RUNNING else None


def session_json(s: Session) -> SessionOut:
    url, pod = viewer_url(s), s.details.get("service_name")
    created, updated, active = iso(s.created_at), iso(s.updated_at), iso(s.last_activity)
    # Minutes from creation to expiry (made a moment apart: rounded).
    ttl = s.expires_at and round((s.expires_at - s.created_at).total_seconds() / 60)
    return SessionOut(
        id=s.id,
        name=s.name or s.id,
        namespace=s.namespace,
        user=s.user,
        template=s.template,
        platform=s.platform,
        agent_id=s.agent_id,
        state=s.state,
        resources=s.resources,
        persistent_home=s.persistent_home,
        idle_timeout=s.idle_timeout,
        tags=s.tags,
        status=SessionStatus(
            phase=_PHASES[s.state],  # type: ignore[arg-type]
            message=s.message or _DEFAULT_MESSAGES.get(s.state, ""),
            pod_ip=None,
            pod_name=pod,
            vnc_url=url,
            started_at=iso(s.started_at),
            url=url,
            podName=pod,
            lastActivity=active,
        ),
        platform_metadata=public_details(s.details),
        created_at=created,
        updated_at=updated,
        last_activity=active,
        agentId=s.agent_id,
        persistentHome=s.persistent_home,
        idleTimeout=s.idle_timeout,
        maxSessionDuration=f"{ttl}m" if ttl else None,
        createdAt=created,
        updatedAt=updated,
        lastActivity=active,
        activeConnections=0,
        streamingProtocol="vnc" if s.vnc else None,
        streamingPort=None,
        streamingPath=None,
    )


@router.route(f"{PREFIX}/sessions", ["POST"], body=NewSession, answers={202: SessionOut},
              errors=(404,), idempotent=True)  # fmt: skip
def create_session(request: Request, body: NewSession) -> Response:
    """Start a session from a template (or create it hibernated); it runs shortly after."""
    principal = who(request)
    ttl = body.ttl_minutes()
    req = SessionRequest(
        provider=body.platform or "auto",
        template=body.template_name(),
        namespace=NAMESPACE,
        user=body.user,
        # StreamSpace sessions end by terminate or idle hibernation, or maxSessionDuration.
        long_lived=ttl is None,
        ttl_minutes=ttl,
        persistent_home=body.persistent_home,
        resources=body.resources.model_dump(exclude_none=True),
        idle_timeout=body.idle_timeout,
        tags=body.tags,
    )
    sessions = bootstrap.services().sessions
    try:
        session = sessions.create(principal, req, wait=0, hibernated=body.state == "hibernated")
    except errors.NotFound as exc:  # the request names a template that does not exist
        if body.template is None:  # as StreamSpace's server answers an unknown application
            raise errors.NotFound(
                f"No application found with ID: {body.application_id}",
                field="applicationId", code="APPLICATION_NOT_FOUND",
            ) from None  # fmt: skip
        raise errors.Invalid(exc.message, field="template", code="TEMPLATE_NOT_FOUND") from None
    return json_response(session_json(session), 202)


@router.route(f"{PREFIX}/sessions", ["GET"], query=SessionFilter, answers={200: SessionList})
def list_sessions(request: Request, query: SessionFilter) -> Response:
    """The caller's sessions (every session, for an admin), filtered, sorted, a page at a time."""
    f = query
    page = bootstrap.services().sessions.listed(
        who(request),
        include_terminated=True,
        tags=f.tag_list,  # any of them, as StreamSpace's own server filters
        order_by=f.sort,
        descending=f.order == "desc",
        limit=f.limit,
        offset=(f.page - 1) * f.limit,
        user=f.user,
        template=f.template,
        platform=f.platform,
        agent_id=f.agent_id,
        state=f.state.value if f.state else None,
    )
    pagination = Pagination.of(f, page.total)
    items = [session_json(s) for s in page.items]
    return json_response(SessionList(sessions=items, pagination=pagination, total=page.total))


# A session's path names it by its id or, as StreamSpace's web UI does, by its name.
SESSION = f"{PREFIX}/sessions/<session_id>"


def session_of(request: Request, key: str) -> tuple[Principal, Session]:
    """The caller and the session `key` names (its id or its name)."""
    principal = who(request)
    return principal, bootstrap.services().sessions.get(principal, key, by_name=True)


@router.route(SESSION, ["GET"], answers={200: SessionOut})
def get_session(request: Request, session_id: str) -> Response:
    """One session (by id or name)."""
    return json_response(session_json(session_of(request, session_id)[1]))


@router.route(SESSION, ["PATCH"], body=SessionPatch, answers={200: SessionOut},
              errors=(403, 409))  # fmt: skip
def patch_session(request: Request, session_id: str, body: SessionPatch) -> Response:
    """Hibernate, wake or terminate a session (a forced terminate is for admins)."""
    principal, found = session_of(request, session_id)
    session_id, current = found.id, found.state
    sessions = bootstrap.services().sessions
    target = SessionState(body.state)
    if current is SessionState.TERMINATING and target is not SessionState.TERMINATED:
        raise errors.Conflict(f"Session {session_id} is terminating", code="SESSION_TERMINATING")
    if target is SessionState.TERMINATED:  # "Any -> terminated: force terminate (admin only)"
        admin(request)
        session = sessions.force_terminate(session_id)
    elif (current, target) == (SessionState.RUNNING, SessionState.HIBERNATED):
        session = sessions.hibernate(principal, session_id)
    elif (current, target) == (SessionState.HIBERNATED, SessionState.RUNNING):
        session = sessions.wake(principal, session_id)
    elif target is SessionState.TERMINATING and current in (
        SessionState.RUNNING,
        SessionState.HIBERNATED,
    ):
        sessions.terminate(session_id, "Session terminating")
        session = sessions.get(principal, session_id)
    else:
        raise errors.InvalidTransition(
            f"Cannot transition from '{current.value}' to '{target.value}'", field="state"
        )
    return json_response(session_json(session))


@router.route(SESSION, ["DELETE"], query=DeleteQuery, answers={204: None},
              errors=(409,))  # fmt: skip
def delete_session(request: Request, session_id: str, query: DeleteQuery) -> Response:
    """Terminate a session (`force`: at once, without waiting for its workspace)."""
    principal, session = session_of(request, session_id)
    sessions = bootstrap.services().sessions
    if query.force:
        sessions.force_terminate(session.id)
    else:
        sessions.delete(principal, session.id)
    return Response(status=204)


# Tickets and API keys take no Idempotency-Key: their answer is a secret, which a kept answer
# would leave at rest in the store (where only their hashes are).
@router.route(f"{SESSION}/tickets", ["POST"], answers={201: Ticket})
def create_ticket(request: Request, session_id: str) -> Response:
    """A single-use credential for this session's WebSockets, valid 60 s: what a browser puts
    in a query string instead of its long-lived token."""
    principal, session = session_of(request, session_id)
    ticket, expires = bootstrap.services().tickets.issue(principal, session.id)
    return json_response(Ticket(ticket=ticket, session_id=session.id, expires_at=iso(expires)), 201)


@router.route(f"{SESSION}/logs", ["GET"], query=LogQuery,
              answers={200: Logs}, errors=(409,))  # fmt: skip
def session_logs(request: Request, session_id: str, query: LogQuery) -> Response:
    """The session's runtime log, its last `tail` lines (`follow=true`: a live stream).

    With `follow=true` the relay answers (`tether.relay.streams`), with the last `tail` lines
    and then each new one until the session ends or the client leaves: as a WebSocket (one text
    message a line) with an Upgrade, else as `text/event-stream` (one event a line, then an
    `end` event) when the client accepts it, else as chunked `text/plain` (one line a line)."""
    principal, session = session_of(request, session_id)
    q = query
    lines = bootstrap.services().sessions.logs(principal, session.id, q.tail)
    if not q.timestamps:
        lines = [line.split(" ", 1)[1] if " " in line else line for line in lines]
    return json_response(Logs(logs=lines))


# -- the web UI's viewer: connect, heartbeat, disconnect; the desktop's plain request --------


@router.route(f"{SESSION}/connect", ["GET"], query=SessionQuery, answers={200: Connected})
def connect_session(request: Request, session_id: str, query: SessionQuery) -> Response:
    """Where to view the session's desktop, and whether it is ready (the web UI's viewer calls
    this before it opens `sessionUrl`). Counts as activity, against idle_timeout."""
    _, session = session_of(request, session_id)
    url = viewer_url(session) or ""
    if session.state is not SessionState.RUNNING:
        message = f"Session is {session.state.value}: it can be viewed once it is running."
    elif not url:
        message = "This session has no desktop to view."
    else:
        message = "Connection established."
        bootstrap.services().sessions.touch(session)
    ready = bool(url)
    return json_response(
        Connected(connectionId=uuid.uuid4().hex, sessionUrl=url, state=session.state,
                  ready=ready, message=message)
    )  # fmt: skip


@router.route(f"{SESSION}/heartbeat", ["POST"], query=ConnectionQuery,
              answers={200: HeartbeatOk})  # fmt: skip
def session_heartbeat(request: Request, session_id: str, query: ConnectionQuery) -> Response:
    """The web UI's viewer is still open: counts as activity, against idle_timeout."""
    _, session = session_of(request, session_id)
    if session.state is SessionState.RUNNING:
        bootstrap.services().sessions.touch(session)
    return json_response(HeartbeatOk(status="ok"))


@router.route(f"{SESSION}/disconnect", ["POST"], query=ConnectionQuery,
              answers={200: Disconnected})  # fmt: skip
def disconnect_session(request: Request, session_id: str, query: ConnectionQuery) -> Response:
    """The web UI's viewer closed (Tether counts no viewers: its desktop's WebSocket ends when
    the page goes)."""
    session_of(request, session_id)
    return json_response(Disconnected(message="Connection closed", activeConnections=0))


class SessionTags(BaseModel):
    tags: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(max_length=32)


@router.route(f"{SESSION}/tags", ["PATCH"], body=SessionTags, answers={200: SessionOut},
              errors=(409,))  # fmt: skip
def patch_session_tags(request: Request, session_id: str, body: SessionTags) -> Response:
    """Replace a session's tags (the web UI's tag manager); an ended one keeps its own (409)."""
    principal, found = session_of(request, session_id)
    session = bootstrap.services().sessions.amend(principal, found.id, retag=lambda _: body.tags)
    return json_response(session_json(session))


# -- the web UI's applications, favourites, quota and sign-in helpers --------------------------
# Tether installs no applications from a catalog: each template is an application, enabled
# for everyone, whose id is the template's name (so a launch by `applicationId` names it).


class Application(BaseModel):
    id: str
    catalogTemplateId: int = Field(description="0: Tether keeps no catalog")
    name: str
    displayName: str
    folderPath: str
    enabled: bool
    createdBy: str
    createdAt: str | None
    updatedAt: str | None
    templateName: str
    templateDisplayName: str
    description: str
    category: str
    appType: Literal["desktop", "webapp"]
    icon: str | None


class ApplicationList(BaseModel):
    applications: list[Application]
    total: int


def application_json(t: Template) -> Application:
    return Application(
        id=t.name,
        catalogTemplateId=0,
        name=t.name,
        displayName=t.display_name,
        folderPath="",
        enabled=True,
        createdBy="system",
        createdAt=iso(t.created_at),
        updatedAt=iso(t.updated_at),
        templateName=t.name,
        templateDisplayName=t.display_name,
        description=t.description,
        category=t.category,
        appType="desktop" if t.vnc.enabled else "webapp",
        icon=t.icon_url,
    )


def _applications(request: Request) -> Response:
    who(request)
    apps = [application_json(t) for t in bootstrap.services().templates.list()]
    return json_response(ApplicationList(applications=apps, total=len(apps)))


@router.route(f"{PREFIX}/applications", ["GET"], answers={200: ApplicationList})
def list_applications(request: Request) -> Response:
    """Every application (a template each)."""
    return _applications(request)


@router.route(f"{PREFIX}/applications/user", ["GET"], answers={200: ApplicationList})
def user_applications(request: Request) -> Response:
    """The applications the caller may launch: all of them (the web UI's dashboard)."""
    return _applications(request)


@router.route(f"{PREFIX}/applications/<segment('user'):app_id>", ["GET"],
              answers={200: Application})  # fmt: skip
def get_application(request: Request, app_id: str) -> Response:
    """One application."""
    who(request)
    try:
        template = bootstrap.services().templates.get(app_id)
    except errors.NotFound:
        raise errors.NotFound(
            f"No application found with ID: {app_id}", code="APPLICATION_NOT_FOUND"
        ) from None
    return json_response(application_json(template))


class Favorite(BaseModel):
    templateName: str
    addedAt: str | None


class Favorites(BaseModel):
    favorites: list[Favorite]
    total: int


class FavoriteChanged(BaseModel):
    message: str
    templateName: str


@router.route(f"{PREFIX}/preferences/favorites", ["GET"], answers={200: Favorites})
def list_favorites(request: Request) -> Response:
    """The caller's favourite templates, the latest marked first."""
    user = bootstrap.services().users.get(who(request).id)
    marked = sorted(user.favorites.items(), key=lambda kv: kv[1], reverse=True)
    items = [Favorite(templateName=name, addedAt=iso(when)) for name, when in marked]
    return json_response(Favorites(favorites=items, total=len(items)))


FAVORITE = f"{PREFIX}/preferences/favorites/<template_name>"


@router.route(FAVORITE, ["POST"], answers={200: FavoriteChanged}, errors=(404,))
def add_favorite(request: Request, template_name: str) -> Response:
    """Mark a template as a favourite (again: no change)."""
    bootstrap.services().users.favorite(who(request).id, template_name, True)
    return json_response(FavoriteChanged(message="Added to favourites", templateName=template_name))


@router.route(FAVORITE, ["DELETE"], answers={200: FavoriteChanged}, errors=(404,))
def remove_favorite(request: Request, template_name: str) -> Response:
    """Unmark a favourite (one not marked: no change)."""
    bootstrap.services().users.favorite(who(request).id, template_name, False)
    return json_response(
        FavoriteChanged(message="Removed from favourites", templateName=template_name)
    )


@router.route(f"{PREFIX}/users/me/quota", ["GET"], errors=(404,))
def my_quota(request: Request) -> Response:
    """None is set: Tether bounds sessions by its agents' capacity and each template's
    resources, not per user. StreamSpace's server answers a user without a quota so too."""
    who(request)
    raise errors.NotFound("No quota is set for this user", code="QUOTA_NOT_FOUND")


class SetupStatus(BaseModel):
    setupRequired: bool
    adminExists: bool
    hasPassword: bool
    message: str


@router.route(f"{PREFIX}/auth/setup/status", ["GET"], answers={200: SetupStatus}, public=True)
def setup_status(request: Request) -> Response:
    """Whether the web UI's first-run wizard is needed: never, as Tether makes the admin with
    a password when it starts (`tether up` shows it; `tether reset-admin` replaces it)."""
    admin_user = bootstrap.services().users.repo.find("admin")
    has_password = bool(admin_user and admin_user.password_hash)
    return json_response(SetupStatus(
        setupRequired=False, adminExists=admin_user is not None, hasPassword=has_password,
        message="The admin account is set up: sign in",
    ))  # fmt: skip


class Refresh(BaseModel):
    token: str = Field(min_length=1, max_length=8192)


@router.route(f"{PREFIX}/auth/refresh", ["POST"], body=Refresh, answers={200: LoggedIn},
              public=True, errors=(401,))  # fmt: skip
def refresh(request: Request, body: Refresh) -> Response:
    """A new JWT for a valid one (the old one stays valid until it expires or signs out)."""
    services = bootstrap.services()
    return signed_in(services.users.get(services.tokens.verify(body.token).id))


def from_query_or_headers(request: Request) -> Principal:
    """The caller, from `?token=` (a JWT or API key, as a page's iframe or WebSocket cannot set
    headers) or else the headers."""
    token = request.args.get("token") or request.args.get("api_key")
    if not token:
        return who(request)
    services = bootstrap.services()
    if looks_like_jwt(token):
        return may(services.tokens.verify(token), request.method)
    return may(services.auth.principal_for_key(token), request.method)


@router.route(f"{PREFIX}/vnc/<session_id>", ["GET"], errors=(409,), listed=False)
def vnc_plain(request: Request, session_id: str) -> Response:
    """The desktop's WebSocket (the relay's, with an Upgrade), asked for without an Upgrade:
    the same checks, then a 400 naming what is missing."""
    principal = from_query_or_headers(request)
    session = bootstrap.services().sessions.usable(principal, session_id, by_name=True)
    if not session.vnc:
        raise errors.NotFound("This session has no desktop", code="SESSION_NOT_FOUND")
    raise errors.Invalid(
        "This is the session's desktop as a WebSocket: connect with 'Upgrade: websocket'",
        field="Upgrade",
    )


@router.route(f"{PREFIX}/http/<session_id>/", ["GET"], listed=False)
@router.route(f"{PREFIX}/http/<session_id>/<path:rest>", ["GET"], listed=False)
def http_stream(request: Request, session_id: str, rest: str = "") -> Response:
    """StreamSpace's proxy for HTTP-streamed desktops (Selkies, Guacamole): Tether streams
    desktops over VNC only, so after the caller and the session are checked, a 404."""
    principal = from_query_or_headers(request)
    session = bootstrap.services().sessions.get(principal, session_id, by_name=True)
    raise errors.NotFound(
        f"Session {session.id} has no HTTP stream; its desktop is at /vnc-viewer/{session.id}"
    )


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="StreamSpace v2 (Tether)",
        version="2.0",
        description="Users and sign-in, the agents registry, templates and session lifecycle. "
        "Every answer carries X-RateLimit-* headers; the desktop is a WebSocket at "
        "/vnc-viewer/{id}. Live logs are GET /api/v1/sessions/{id}/logs?follow=true (not "
        "described here): a WebSocket with an Upgrade (a text message a line); else a "
        "stream, text/event-stream when the client accepts it (a `data:` event a line, then "
        "an `end` event naming why it ended), otherwise chunked text/plain (a line a line). "
        "Each starts with the last `tail` lines and ends when the session does.",
        error=Error,
        security={
            "Bearer": {"type": "http", "scheme": "bearer", "description": "A JWT or API key"},
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        always=(*openapi.ALWAYS, 429),
    )


openapi.serve(router, "streamspace", document)
