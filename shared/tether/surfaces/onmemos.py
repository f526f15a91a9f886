"""OnMemOS v3 surface: `/v1/sessions` (unified) and `/v1/cloudrun/workspaces` (legacy).

Errors are `{"detail": "..."}`; auth is the `X-API-Key` header.

Besides the reference document, this serves what OnMemOS' own clients send and read
(masterFoad/memos at 3952b06: the Python SDK `sdk/python`, the packaged SDKs `starbase` and
`onmemos-sdk`, and the real server under `server/api`): execute's fields in the query string,
`workspace_id` on a session, the legacy answers' `service_url` and `bucket_name`, paginated
lists, `ws-token`, pause and resume; the server's information (`/`, `/info`), workspaces
(`/v1/workspaces`), files in a session's storage (`/v1/fs/persist`), a session's labels, TTL,
usage and terminate/force-delete, templates, and starbase's storage calls. What has no
meaning here (cost estimation, scaling a running session, mounts) is a 501 naming it.
"""

from __future__ import annotations

import io
import posixpath
import re
import shlex
from collections import Counter
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import FormDataParser
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.core.lifecycle import CommandState, SessionState
from tether.core.models import (
    ActivitySource,
    ExecResult,
    Principal,
    Session,
    SessionRequest,
    Template,
    utcnow,
)
from tether.core.models import Command as CommandRecord
from tether.errors import Invalid, NotFound, TetherError, Unsupported
from tether.service.agents import PROVIDER_PLATFORMS
from tether.service.files import MAX_PATH, StoredFile
from tether.service.pages import Page
from tether.service.webhooks import MAX_URL as MAX_WEBHOOK_URL
from tether.service.webhooks import check_url
from tether.service.workspaces import WORKSPACE_TAG, Workspace
from tether.surfaces import openapi
from tether.surfaces.http import (
    INTEGRAL,
    REQUEST_ID_FIELD,
    RETRY_AFTER,
    Router,
    json_response,
    may,
    public_details,
    request_id,
)

LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
HOME = "/home/tether"  # a workspace's home, on every platform
MAX_TTL_MINUTES = 7 * 24 * 60
MAX_TIMEOUT = 3600
# Code in a query string (the legacy API) percent-encodes to up to 12 bytes a character, and a
# request head is at most 64 KiB (tether.origin.guard): this keeps every valid one within it.
MAX_QUERY_CODE = 4096
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
NO_NUL = r"^[^\x00]*$"  # a command line, a variable or a directory cannot carry one
# What a session carries as tags (its `workspace_id` is one too, WORKSPACE_TAG): the provider
# it was asked for, and each of its labels.
PROVIDER_TAG = "onmemos.provider="
LABEL_TAG = "onmemos.label."
LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
LABEL_VALUE = r"^[^\x00-\x1f\x7f]{0,256}$"
METADATA_PAIR = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[^\x00-\x1f\x7f]{0,256}$"


class Error(BaseModel):
    """Every OnMemOS error."""

    detail: str
    # Absent only from a workspace runtime's own refusal, relayed as it is (its X-Request-Id
    # header names the request).
    request_id: str | None = Field(None, description=REQUEST_ID_FIELD)


def render_error(error: TetherError, status: int) -> Response:
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return json_response({"detail": error.message, "request_id": request_id()}, status, headers)


TtlMinutes = Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES), INTEGRAL]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]


Labels = Annotated[
    dict[
        Annotated[str, Field(pattern=LABEL_KEY)],
        Annotated[str, Field(max_length=256, pattern=LABEL_VALUE)],
    ],
    Field(max_length=32),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": LABEL_KEY},
            "additionalProperties": {"type": "string", "maxLength": 256, "pattern": LABEL_VALUE},
        }
    ),
]
Reusable = Annotated[str | None, Field(None, max_length=200, description="Refused: see README")]


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: Literal["auto", "cloud_run", "gke", "workstations"] = "auto"
    template: str = Field("python", min_length=1, max_length=63)
    # Without one, the workspace's id, else "default" (as OnMemOS' server does).
    namespace: str | None = Field(None, pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: TtlMinutes | None = None
    long_lived: bool = False
    workspace_id: str | None = Field(None, pattern=LABEL)
    labels: Labels | None = None
    metadata: Labels | None = Field(None, description="Key/value pairs: `labels` by another name")
    webhook_url: str | None = Field(
        None,
        max_length=MAX_WEBHOOK_URL,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
        description="Where the expiry warning is POSTed, signed with the answer's "
        "`webhook_secret` (README: A warning before expiry)",
    )
    warn_minutes: int | None = Field(
        None,
        ge=0,
        le=1440,
        description="Minutes before the TTL or idle timeout ends the session that it is warned "
        "(0: never; default: the deployment's TETHER_EXPIRY_WARNING)",
    )
    # starbase's reusable storage: Tether keeps none, so naming one is refused (as OnMemOS'
    # server refuses a vault it does not have).
    vault_id: Reusable = None
    vault_name: Reusable = None
    drive_id: Reusable = None
    drive_name: Reusable = None


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="ignore")

    template: str = Field("python", min_length=1, max_length=63)
    namespace: str = Field("default", pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: TtlMinutes | None = None


class Command(BaseModel):
    model_config = ConfigDict(extra="ignore")

    command: str = Field(min_length=1, max_length=100_000, pattern=NO_NUL)
    timeout: Timeout = 120
    async_execution: bool = Field(
        False,
        description="Answer at once with a `job_id`; "
        "`GET /v1/sessions/{session_id}/jobs/{job_id}/status` tells how the command did",
    )


EnvName = Annotated[str, Field(pattern=ENV_NAME, max_length=256)]
Env = Annotated[
    dict[EnvName, Annotated[str, Field(max_length=32_768, pattern=NO_NUL)]],
    Field(max_length=256),
    # pydantic says the key pattern as patternProperties, which lets other keys through; the
    # check refuses them, so the document says propertyNames.
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 256,
            "propertyNames": {"pattern": ENV_NAME, "maxLength": 256},
            "additionalProperties": {"type": "string", "maxLength": 32_768, "pattern": NO_NUL},
        }
    ),
]


class Execute(Command):
    env: Env | None = Field(None, description="Variables added to the workspace's for this command")
    cwd: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=NO_NUL,
        description="Directory to run in: relative to the home, or absolute",
    )


class ExecuteQuery(Command):
    command: str = Field(min_length=1, max_length=MAX_QUERY_CODE, pattern=NO_NUL)


class ListFilter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    namespace: str | None = None
    user: str | None = None
    include_terminated: bool = False
    workspace_id: str | None = None
    status: str | None = None  # as a session shows it ("running", "expired", ...)
    metadata: list[Annotated[str, Field(max_length=330, pattern=METADATA_PAIR)]] = Field(
        default_factory=list,
        max_length=8,
        description="`key=value`: only sessions with that metadata (every pair given; with "
        "more than one, a page may hold fewer than `limit` and `total` counts the first's)",
    )
    # A page at a time (onmemos-sdk pages with limit and offset); `next_cursor` in an answer
    # goes back as `cursor` for the page after it.
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000_000)  # answers carry it in 64-bit JSON numbers
    cursor: str | None = Field(None, max_length=1000)

    @field_validator("cursor")
    @classmethod
    def _one_way(cls, cursor: str | None, info: ValidationInfo) -> str | None:
        if cursor and info.data.get("offset"):
            raise ValueError("give a cursor or an offset, not both")
        return cursor


class RunPython(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(min_length=1, max_length=MAX_QUERY_CODE, pattern=NO_NUL)
    timeout: Timeout = 120


class LogQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lines: int = Field(100, ge=1, le=10_000)
    type: str = "stdout"  # OnMemOS' log kinds; the runtime keeps one log


def principal(request: Request) -> Principal:
    """X-API-Key as the spec says; a Bearer token (JWT or key) works on every surface too."""
    key, bearer = request.headers.get("X-API-Key"), request.headers.get("Authorization")
    cached = request.environ.get("tether.principal")  # asked once a request
    if isinstance(cached, Principal):
        return may(cached, request.method)
    auth = bootstrap.services().auth
    who = auth.authenticate(bearer, None) if bearer and not key else auth.principal_for_key(key)
    request.environ["tether.principal"] = who  # the audit log's actor
    return may(who, request.method)


router = Router(render_error, owner=lambda request: principal(request).id)


Status = Literal[
    "pending", "running", "hibernating", "hibernated", "waking", "terminating", "terminated",
    "failed", "expired",
]  # fmt: skip


class SessionOut(BaseModel):
    id: str
    provider: str
    namespace: str
    user: str
    template: str
    status: Status
    url: str = Field(description="The session on this API (the workspace itself is private)")
    service_url: str = Field(description="The legacy API's name for `url`")
    websocket: str
    ssh: bool
    details: dict[str, Any]
    bucket_name: str | None
    workspace_id: str
    k8s_namespace: str | None
    pod_name: str | None
    service_name: str | None
    long_lived: bool
    created_at: str
    expires_at: str | None
    ttl_minutes: int | None
    labels: dict[str, str]
    metadata: dict[str, str] = Field(description="The same as `labels`")
    last_activity_at: str = Field(description="When the session last saw activity")
    last_activity_source: ActivitySource = Field(description="What that activity was")
    webhook_url: str | None = Field(None, description="Where its expiry warning is POSTed")
    warn_minutes: float | None = Field(
        None, description="Minutes before its TTL or idle timeout that it is warned"
    )


class CreatedSession(SessionOut):
    webhook_secret: str | None = Field(
        None,
        description="With a webhook_url: the secret its warnings are signed with. "
        "Shown in this answer only; keep it",
    )


class Deleted(SessionOut):
    deleted: bool
    message: str


class SessionList(BaseModel):
    sessions: list[SessionOut]
    total: int
    count: int
    page: int
    per_page: int
    has_next: bool
    has_prev: bool
    next_cursor: str | None = Field(description="`cursor` for the page after this; null at the end")


class WorkspaceList(BaseModel):
    workspaces: list[SessionOut]
    total: int
    next_cursor: str | None = Field(description="`cursor` for the page after this; null at the end")


class Ran(ExecResult):
    session_id: str
    command: str


class WorkspaceRan(Ran):
    workspace_id: str


class Job(BaseModel):
    """A command started with `async_execution` (OnMemOS's job): submitted, then running,
    then completed (exit code 0) or failed. Kept 10 minutes after it ends."""

    job_id: str
    job_name: str
    session_id: str
    status: Literal["submitted", "running", "completed", "failed"]
    success: bool
    message: str
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    timed_out: bool = False


class ExecAnswer(RootModel[Ran | Job]):
    """A command's result, or its job when it was started with `async_execution`."""


class WorkspaceExecAnswer(RootModel[WorkspaceRan | Job]):
    """A command's result, or its job when it was started with `async_execution`."""


class JobQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_name: str | None = Field(None, max_length=253, description="Sent by OnMemOS' clients")


def job_json(command: CommandRecord) -> Job:
    """A command's record as OnMemOS tells of a job."""
    base = {"job_id": command.id, "job_name": command.id, "session_id": command.session_id or ""}
    if command.state is CommandState.FAILED:
        message = f"The command could not run: {command.error or 'agent error'}"
        return Job(**base, status="failed", success=False, message=message)
    if command.state is not CommandState.SUCCEEDED:
        state = "submitted" if command.state is CommandState.PENDING else "running"
        return Job(**base, status=state, success=False, message=f"The job is {state}")
    result = ExecResult.model_validate(command.result or {})
    ended = "completed" if result.returncode == 0 else "failed"
    return Job(**base, status=ended, success=result.success, message=f"The job {ended}",
               stdout=result.stdout, stderr=result.stderr, returncode=result.returncode,
               timed_out=result.timed_out)  # fmt: skip


class Connection(BaseModel):
    session_id: str
    provider: str
    status: Status
    url: str
    execute: str
    websocket: str
    ssh: bool
    expires_at: str | None


class WsToken(BaseModel):
    token: str = Field(description="Single-use: `?token=` on the session's shell WebSocket")
    expires_in: int
    websocket: str


class SessionLogs(BaseModel):
    session_id: str
    logs: list[str]
    total_lines: int
    start_line: int
    end_line: int
    has_more: bool
    log_type: str
    timestamp: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["healthy", "degraded"]


def base_url(request: Request) -> str:
    """This API's base URL, as the client reached it."""
    return request.host_url.rstrip("/")


def ws_url(request: Request, path: str) -> str:
    base = base_url(request)
    return ("wss" + base[5:] if base.startswith("https") else "ws" + base[4:]) + path


def status_of(s: Session) -> str:
    """The session's state as OnMemOS shows it: a live one past its TTL is "expired"."""
    live = s.state not in (SessionState.TERMINATING, SessionState.TERMINATED)
    return "expired" if live and s.expired(utcnow()) else s.state.value


def tagged(s: Session, prefix: str) -> list[str]:
    """What the session's tags starting with `prefix` hold after it."""
    return [t.removeprefix(prefix) for t in s.tags if t.startswith(prefix)]


def where_it_runs(s: Session) -> dict[str, Any]:
    """The provider asked for, and, when an agent of another platform serves it (`tether up`'s
    local agent standing in: TETHER_LOCAL_STANDS_IN), which one that was."""
    asked = tagged(s, PROVIDER_TAG)
    if not asked:
        return {}
    if s.platform in PROVIDER_PLATFORMS.get(asked[0], (asked[0],)):
        return {"requested_provider": asked[0]}
    return {"requested_provider": asked[0], "stand_in_for": asked[0]}


def session_json(s: Session, base: str) -> SessionOut:
    status = status_of(s)
    details = public_details(s.details)
    workspace = tagged(s, WORKSPACE_TAG)
    labels = dict(t.partition("=")[::2] for t in tagged(s, LABEL_TAG))
    ttl = round((s.expires_at - s.created_at) / timedelta(minutes=1)) if s.expires_at else None
    url = f"{base}/v1/sessions/{s.id}"
    return SessionOut(
        id=s.id,
        provider=s.platform,
        namespace=s.namespace,
        user=s.user,
        template=s.template,
        status=status,  # type: ignore[arg-type]
        url=url,
        service_url=url,
        websocket=f"/v1/cloudrun/workspaces/{s.id}/shell",
        ssh=False,
        details={**details, **where_it_runs(s), "agent_id": s.agent_id, "message": s.message},
        bucket_name=details.get("bucket_name"),
        workspace_id=workspace[0] if workspace else s.namespace,
        k8s_namespace=details.get("k8s_namespace"),
        pod_name=details.get("pod_name"),
        service_name=details.get("service_name"),
        long_lived=s.long_lived,
        created_at=s.created_at.isoformat(),
        expires_at=s.expires_at.isoformat() if s.expires_at else None,
        ttl_minutes=ttl,
        labels=labels,
        metadata=labels,
        last_activity_at=s.last_activity.isoformat(),
        last_activity_source=s.last_activity_source,
        webhook_url=s.webhook_url,
        warn_minutes=s.warn_minutes,
    )


def _ran(request: Request, session_id: str, body: Command) -> Ran | Job:
    env, cwd = (body.env, body.cwd) if isinstance(body, Execute) else (None, None)
    sessions, who = bootstrap.services().sessions, principal(request)
    if body.async_execution:
        command = sessions.submit(who, session_id, body.command, body.timeout, env, cwd)
        return job_json(command)
    result = sessions.execute(who, session_id, body.command, body.timeout, env, cwd)
    return Ran(session_id=session_id, command=body.command, **result.model_dump())


# -- unified API ------------------------------------------------------------------------------

CREATED = {201: SessionOut}
UNSUPPORTED: dict[int, type[BaseModel] | None] = {501: Error}  # what OnMemOS has, Tether not
RAN = {200: ExecAnswer}
EXEC_ERRORS = (409, 504)  # not running; the command outlived its timeout


def _create(
    request: Request, who: Principal, req: SessionRequest, secret_once: bool = False
) -> Response:
    """`secret_once`: the answer shows the session's webhook secret (none else ever does)."""
    session = bootstrap.services().sessions.create(who, req)
    out = session_json(session, base_url(request))
    if secret_once:
        out = CreatedSession(**out.model_dump(), webhook_secret=session.webhook_secret)
    return json_response(out, 201)


def _list(request: Request, query: ListFilter) -> tuple[list[SessionOut], Page[Session]]:
    """One page of the caller's sessions (as the answer shows them), and the page."""
    sessions, who = bootstrap.services().sessions, principal(request)
    if query.status == "expired":  # live past their TTL, not swept yet: a minute's worth
        due = sessions.overdue(who)
        page = Page(due[query.offset : query.offset + query.limit], len(due), None)
    else:
        page = sessions.listed(
            who,
            states=[query.status] if query.status else None,
            include_terminated=query.include_terminated,
            tags=[WORKSPACE_TAG + query.workspace_id] if query.workspace_id else None,
            all_tags=[LABEL_TAG + pair for pair in query.metadata],
            limit=query.limit,
            offset=query.offset,
            cursor=query.cursor,
            namespace=query.namespace,
            user=query.user,
        )
    # A live one past its TTL shows as "expired", never under its state's name.
    shown = [s for s in page.items if not query.status or status_of(s) == query.status]
    base = base_url(request)
    return [session_json(s, base) for s in shown], page


@router.route("/v1/sessions", ["POST"], body=CreateSession, answers={201: CreatedSession},
              errors=(404,), idempotent=True)  # fmt: skip
def create_session(request: Request, body: CreateSession) -> Response:
    """Create a session from a template, on an agent of the provider asked for."""
    who = principal(request)
    for field in ("vault_id", "vault_name", "drive_id", "drive_name"):
        if named := getattr(body, field):
            kind = "Vault" if field.startswith("vault") else "Drive"
            raise NotFound(
                f"{kind} not found: {named} (Tether keeps no vaults or drives: a session's "
                "files live in its own storage, /v1/fs/persist)",
                field=field,
            )
    fields = body.model_dump(include={"provider", "template", "user", "ttl_minutes", "long_lived",
                                      "webhook_url", "warn_minutes"})  # fmt: skip
    if body.webhook_url:
        check_url(body.webhook_url, bootstrap.services().settings.webhook_allow_private)
    namespace = body.namespace or body.workspace_id or "default"
    tags = [WORKSPACE_TAG + body.workspace_id] if body.workspace_id else []
    if body.provider != "auto":
        tags.append(PROVIDER_TAG + body.provider)
    labels = {**(body.labels or {}), **(body.metadata or {})}
    tags += [f"{LABEL_TAG}{k}={v}" for k, v in labels.items()]
    req = SessionRequest(**fields, namespace=namespace, tags=tags)
    return _create(request, who, req, secret_once=True)


@router.route("/v1/sessions", ["GET"], query=ListFilter, answers={200: SessionList})
def list_sessions(request: Request, query: ListFilter) -> Response:
    """The caller's sessions (a page of them with `limit` and `offset`)."""
    items, page = _list(request, query)
    return json_response(
        SessionList(
            sessions=items,
            total=page.total,
            count=page.total,
            page=query.offset // query.limit + 1,
            per_page=query.limit,
            has_next=page.next_cursor is not None,
            has_prev=query.offset > 0 or query.cursor is not None,
            next_cursor=page.next_cursor,
        )
    )


@router.route("/v1/sessions/<session_id>", ["GET"], answers={200: SessionOut})
def get_session(request: Request, session_id: str) -> Response:
    """One session."""
    session = bootstrap.services().sessions.get(principal(request), session_id)
    return json_response(session_json(session, base_url(request)))


def _delete(request: Request, session_id: str, message: str) -> Response:
    session = bootstrap.services().sessions.delete(principal(request), session_id)
    out = session_json(session, base_url(request))
    return json_response(Deleted(deleted=True, message=message, **out.model_dump()))


@router.route("/v1/sessions/<session_id>", ["DELETE"], answers={200: Deleted}, errors=(409,))
def delete_session(request: Request, session_id: str) -> Response:
    """Terminate a session."""
    return _delete(request, session_id, "Session deleted")


# The reference sends execute's fields as a JSON body; the packaged SDKs (and OnMemOS' own
# server) send them in the query string, with no body: both are read.
@router.route("/v1/sessions/<session_id>/execute", ["POST"], body=Execute, answers=RAN,
              errors=EXEC_ERRORS, body_in_query=ExecuteQuery)  # fmt: skip
@router.route("/v1/sessions/<session_id>/shell/execute", ["POST"], body=Execute, answers=RAN,
              errors=EXEC_ERRORS, body_in_query=ExecuteQuery)  # fmt: skip
def execute_session(request: Request, session_id: str, body: Execute) -> Response:
    """Run a shell command in the session's workspace."""
    return json_response(_ran(request, session_id, body))


@router.route("/v1/sessions/<session_id>/jobs/<job_id>/status", ["GET"], query=JobQuery,
              answers={200: Job})  # fmt: skip
def job_status(request: Request, session_id: str, job_id: str, query: JobQuery) -> Response:
    """How a command started with `async_execution` is doing, and its output once it ended."""
    command = bootstrap.services().sessions.job(principal(request), session_id, job_id)
    return json_response(job_json(command))


@router.route("/v1/sessions/<session_id>/connect", ["GET"], answers={200: Connection},
              errors=(409,))  # fmt: skip
@router.route("/v1/sessions/<session_id>/shell/status", ["GET"], answers={200: Connection},
              errors=(409,))  # fmt: skip
# The shell's own path without an Upgrade (onmemos-sdk's `get_connection_info`); with one, it
# is the shell's WebSocket (tether.relay.app).
@router.route("/v1/sessions/<session_id>/shell", ["GET"], answers={200: Connection},
              errors=(409,))  # fmt: skip
@router.route("/v1/cloudrun/workspaces/<session_id>/shell", ["GET"], answers={200: Connection},
              errors=(409,))  # fmt: skip
def connect_session(request: Request, session_id: str) -> Response:
    """How to reach a running session: its execute URL and shell WebSocket."""
    session = bootstrap.services().sessions.usable(principal(request), session_id)
    base = base_url(request)
    return json_response(
        Connection(
            session_id=session.id,
            provider=session.platform,
            status=session.state.value,  # type: ignore[arg-type]
            url=f"{base}/v1/sessions/{session.id}",
            execute=f"{base}/v1/sessions/{session.id}/execute",
            websocket=ws_url(request, f"/v1/sessions/{session.id}/shell"),
            ssh=False,
            expires_at=session.expires_at.isoformat() if session.expires_at else None,
        )
    )


# A ticket takes no Idempotency-Key: its answer is a secret, which a kept answer would leave
# in the store.
@router.route("/v1/sessions/<session_id>/ws-token", ["POST"], answers={200: WsToken})
def ws_token(request: Request, session_id: str) -> Response:
    """A single-use credential for the session's shell WebSocket, valid 60 s."""
    who = principal(request)
    services = bootstrap.services()
    services.sessions.get(who, session_id)
    ticket, expires = services.tickets.issue(who, session_id)
    return json_response(
        WsToken(
            token=ticket,
            expires_in=int((expires - utcnow()).total_seconds()),
            websocket=ws_url(request, f"/v1/sessions/{session_id}/shell"),
        )
    )


class Extend(BaseModel):
    """One of `minutes` or `expires_in`."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"oneOf": [{"required": ["minutes"]}, {"required": ["expires_in"]}]},
    )

    minutes: Annotated[int, Field(ge=1, le=1440), INTEGRAL] = Field(
        None,  # type: ignore[assignment]  # absent, never null (the schema says one is given)
        description="Added to the expiry",
    )
    expires_in: Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES * 60), INTEGRAL] = Field(
        None,  # type: ignore[assignment]
        description="Seconds from now: the new expiry",
    )

    @model_validator(mode="after")
    def _one(self) -> Extend:
        if (self.minutes is None) == (self.expires_in is None):
            raise ValueError("give `minutes` or `expires_in`, one of them")
        return self


@router.route("/v1/sessions/<session_id>/extend", ["POST"], body=Extend,
              answers={200: SessionOut}, errors=(409,))  # fmt: skip
def extend_session(request: Request, session_id: str, body: Extend) -> Response:
    """Give a session more time: `minutes` more, or `expires_in` seconds from now (at most a
    week from now either way). An expiry warning's extend token (`Authorization: Bearer`) is
    credential enough here, and nowhere else."""
    more = timedelta(minutes=body.minutes) if body.minutes else None
    left = timedelta(seconds=body.expires_in) if body.expires_in else None
    services = bootstrap.services()
    holder = None
    if request.headers.get("X-API-Key") is None:
        holder = services.warnings.holder(request.headers.get("Authorization"), session_id)
    if holder is not None:
        request.environ["tether.principal"] = holder  # the audit log's actor
        session = services.warnings.extend(holder, session_id, more, left)
    else:
        session = services.sessions.extend(principal(request), session_id, more, left)
    return json_response(session_json(session, base_url(request)))


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, max_length=1000, description="A page's `next_cursor`")
    limit: int = Field(50, ge=1, le=200)


class ExtendLink(BaseModel):
    url: str = Field(description="POST here, with the token, to extend the session")
    token: str = Field(description="`Authorization: Bearer <token>`; valid until the deadline")


class SessionEvent(BaseModel):
    type: Literal["expiry_warning"]
    id: str
    session_id: str
    reason: Literal["ttl", "idle"] = Field(
        description="ttl: the session ends then; idle: it hibernates then, unless used"
    )
    deadline: str = Field(description="When it ends (ttl) or hibernates (idle)")
    time: str = Field(description="When the warning was made")
    extend: ExtendLink | None = Field(description="The one-call extend; null once past")


class SessionEvents(BaseModel):
    events: list[SessionEvent]
    next_cursor: str | None = Field(description="`after` for the page after this; null at the end")


@router.route("/v1/sessions/<session_id>/events", ["GET"], query=EventsQuery,
              answers={200: SessionEvents})  # fmt: skip
def session_events(request: Request, session_id: str, query: EventsQuery) -> Response:
    """A session's events (its expiry warnings), oldest first, a page after `after`."""
    events, cursor = bootstrap.services().warnings.listed(
        principal(request), session_id, query.after, query.limit
    )
    return json_response(SessionEvents.model_validate({"events": events, "next_cursor": cursor}))


@router.route("/v1/sessions/<session_id>/pause", ["POST"], answers={200: SessionOut},
              errors=(409,))  # fmt: skip
def pause_session(request: Request, session_id: str) -> Response:
    """Hibernate: stop the workspace's processes, keeping its files."""
    session = bootstrap.services().sessions.hibernate(principal(request), session_id)
    return json_response(session_json(session, base_url(request)))


@router.route("/v1/sessions/<session_id>/resume", ["POST"], answers={200: SessionOut},
              errors=(409,))  # fmt: skip
def resume_session(request: Request, session_id: str) -> Response:
    """Wake a paused session."""
    session = bootstrap.services().sessions.wake(principal(request), session_id)
    return json_response(session_json(session, base_url(request)))


@router.route("/v1/sessions/<session_id>/logs", ["GET"], query=LogQuery,
              answers={200: SessionLogs}, errors=(409,))  # fmt: skip
def session_logs(request: Request, session_id: str, query: LogQuery) -> Response:
    """The last `lines` lines of the session's runtime log."""
    lines = bootstrap.services().sessions.logs(principal(request), session_id, query.lines)
    return json_response(
        SessionLogs(
            session_id=session_id,
            logs=lines,
            total_lines=len(lines),
            start_line=1 if lines else 0,
            end_line=len(lines),
            has_more=len(lines) == query.lines,
            log_type=query.type,
            timestamp=utcnow().isoformat(),
        )
    )


# The Python SDK's force_cleanup_session tries these after a DELETE.
@router.route("/v1/sessions/<session_id>/terminate", ["POST"], answers={200: Deleted},
              errors=(409,))  # fmt: skip
def terminate_session(request: Request, session_id: str) -> Response:
    """Terminate a session (as DELETE does)."""
    return _delete(request, session_id, "Session terminated")


@router.route("/v1/sessions/<session_id>/force-delete", ["POST"], answers={200: Deleted})
def force_delete_session(request: Request, session_id: str) -> Response:
    """Terminated at once, whatever its state; its agent tears the workspace down behind."""
    sessions = bootstrap.services().sessions
    sessions.get(principal(request), session_id)
    session = sessions.force_terminate(session_id)
    out = session_json(session, base_url(request))
    return json_response(Deleted(deleted=True, message="Session force-deleted", **out.model_dump()))


class UpdateSession(BaseModel):
    """onmemos-sdk's SessionUpdateRequest."""

    model_config = ConfigDict(extra="ignore")

    ttl_minutes: TtlMinutes | None = Field(
        None, description="The session's lifetime, counted from its creation (as at create)"
    )
    env_vars: dict[str, str] | None = Field(
        None, description="Refused (501) unless empty: pass `env` with each execute"
    )
    labels: Labels | None = Field(None, description="Replaces the session's labels")


@router.route("/v1/sessions/<session_id>", ["PATCH"], body=UpdateSession,
              answers={200: SessionOut}, errors=(409, 501))  # fmt: skip
def update_session(request: Request, session_id: str, body: UpdateSession) -> Response:
    """Change a session's TTL and labels."""
    who, sessions = principal(request), bootstrap.services().sessions
    if body.env_vars:
        sessions.get(who, session_id)
        raise Unsupported(
            "Changing a running session's environment is not supported: its processes have "
            "started. Pass `env` with each execute instead."
        )
    retag = None
    if body.labels is not None:
        labels = [f"{LABEL_TAG}{k}={v}" for k, v in body.labels.items()]

        def retag(tags: list[str]) -> list[str]:
            return [t for t in tags if not t.startswith(LABEL_TAG)] + labels

    session = sessions.amend(who, session_id, body.ttl_minutes, retag)
    return json_response(session_json(session, base_url(request)))


class Scale(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resource_tier: str = Field(min_length=1, max_length=63)


@router.route("/v1/sessions/<session_id>/scale", ["PATCH"], body=Scale, answers=UNSUPPORTED)
def scale_session(request: Request, session_id: str, body: Scale) -> Response:
    """Not supported: a running workspace keeps the resources it started with (501)."""
    bootstrap.services().sessions.get(principal(request), session_id)
    raise Unsupported(
        "Scaling a running session is not supported: a workspace keeps the resources its "
        "template gave it. Create a session from a template with the resources you need."
    )


class Metrics(BaseModel):
    """onmemos-sdk's SessionMetrics, measured in the workspace."""

    session_id: str
    cpu_usage_percent: float = Field(description="Of one core, over half a second")
    memory_usage_mb: int = Field(description="Resident memory of the workspace's processes")
    memory_limit_mb: int
    disk_usage_gb: float = Field(description="The home's size")
    network_rx_mb: float
    network_tx_mb: float
    gpu_usage_percent: float | None = Field(description="Workspaces have no GPU: null")
    gpu_memory_mb: int | None
    timestamp: str


@router.route("/v1/sessions/<session_id>/metrics", ["GET"], answers={200: Metrics},
              errors=(409, 504))  # fmt: skip
def session_metrics(request: Request, session_id: str) -> Response:
    """What a running session uses now: CPU, memory, disk, network."""
    used = bootstrap.services().usages.measure(principal(request), session_id)
    mb = 1 << 20
    return json_response(
        Metrics(
            session_id=used.session_id,
            cpu_usage_percent=used.cpu_percent,
            memory_usage_mb=used.memory_bytes // mb,
            memory_limit_mb=used.memory_limit_bytes // mb,
            disk_usage_gb=round(used.disk_bytes / (1 << 30), 3),
            network_rx_mb=round(used.network_rx_bytes / mb, 3),
            network_tx_mb=round(used.network_tx_bytes / mb, 3),
            gpu_usage_percent=None,
            gpu_memory_mb=None,
            timestamp=used.at.isoformat(),
        )
    )


@router.route("/v1/sessions/<session_id>/storage/mounts", ["DELETE"], answers=UNSUPPORTED)
def unmount_storage(request: Request, session_id: str) -> Response:
    """Not supported: a session's storage is its home, which is never unmounted (501)."""
    bootstrap.services().sessions.get(principal(request), session_id)
    raise Unsupported(
        "Mounting and unmounting storage is not supported: a session's storage is its home, "
        "mounted for its whole life (files: /v1/fs/persist)."
    )


# -- legacy Cloud Run API ---------------------------------------------------------------------


@router.route("/v1/cloudrun/workspaces", ["POST"], body=CreateWorkspace, answers=CREATED,
              errors=(404,), idempotent=True)  # fmt: skip
def create_workspace(request: Request, body: CreateWorkspace) -> Response:
    """Create a workspace (Cloud Run when a Cloud Run agent is online, else any)."""
    who = principal(request)
    req = SessionRequest(**body.model_dump(), provider="auto", prefer=("cloud_run",))
    return _create(request, who, req)


@router.route("/v1/cloudrun/workspaces", ["GET"], query=ListFilter, answers={200: WorkspaceList})
def list_workspaces(request: Request, query: ListFilter) -> Response:
    """The caller's workspaces."""
    items, page = _list(request, query)
    return json_response(
        WorkspaceList(workspaces=items, total=page.total, next_cursor=page.next_cursor)
    )


@router.route("/v1/cloudrun/workspaces/<session_id>", ["GET"], answers={200: SessionOut})
def get_workspace(request: Request, session_id: str) -> Response:
    """One workspace."""
    return get_session(request, session_id)


@router.route("/v1/cloudrun/workspaces/<session_id>", ["DELETE"], answers={200: Deleted},
              errors=(409,))  # fmt: skip
def delete_workspace(request: Request, session_id: str) -> Response:
    """Terminate a workspace."""
    return _delete(request, session_id, "Workspace deleted successfully")


def _ran_in_workspace(request: Request, session_id: str, body: Command) -> Response:
    ran = _ran(request, session_id, body)
    if isinstance(ran, Job):
        return json_response(ran)
    return json_response(WorkspaceRan(workspace_id=session_id, **ran.model_dump()))


@router.route("/v1/cloudrun/workspaces/<session_id>/execute", ["POST"], query=ExecuteQuery,
              answers={200: WorkspaceExecAnswer}, errors=EXEC_ERRORS)  # fmt: skip
@router.route("/v1/cloudrun/workspaces/<session_id>/runsh", ["POST"], query=ExecuteQuery,
              answers={200: WorkspaceExecAnswer}, errors=EXEC_ERRORS)  # fmt: skip
def execute_workspace(request: Request, session_id: str, query: ExecuteQuery) -> Response:
    """Run a shell command in the workspace (the command in the query string)."""
    return _ran_in_workspace(request, session_id, query)


@router.route("/v1/cloudrun/workspaces/<session_id>/runpython", ["POST"], query=RunPython,
              answers={200: WorkspaceExecAnswer}, errors=EXEC_ERRORS)  # fmt: skip
def runpython_workspace(request: Request, session_id: str, query: RunPython) -> Response:
    """Run Python code in the workspace (the code in the query string)."""
    command = f"python3 -c {shlex.quote(query.code)}"
    return _ran_in_workspace(request, session_id, Command(command=command, timeout=query.timeout))


# -- the server's information -----------------------------------------------------------------


class ServerInfo(BaseModel):
    service: str
    description: str
    version: str
    status: Literal["running"]
    endpoints: dict[str, str]
    documentation: str
    timestamp: str


@router.route("/", ["GET"], answers={200: ServerInfo})
@router.route("/info", ["GET"], answers={200: ServerInfo})
def server_info(request: Request) -> Response:
    """What this API is and where its parts are (OnMemOS's `/`; onmemos-sdk's `/info`)."""
    principal(request)
    return json_response(
        ServerInfo(
            service="OnMemOS v3 (Tether)",
            description="Workspaces as sessions: OnMemOS v3's API, served by Tether",
            version="3.0.0",
            status="running",
            endpoints={
                "health": "/health",
                "sessions": "/v1/sessions",
                "cloudrun_workspaces": "/v1/cloudrun/workspaces",
                "workspaces": "/v1/workspaces",
                "persistent_files": "/v1/fs/persist",
                "templates": "/v1/templates",
                "shell": "/v1/sessions/{id}/shell",
                "cloudrun_shell": "/v1/cloudrun/workspaces/{id}/shell",
                "openapi": "/openapi/onmemos.json",
            },
            documentation="Authenticate with the X-API-Key header; the reference is at "
            "/openapi/onmemos",
            timestamp=utcnow().isoformat(),
        )
    )


# -- workspaces (the Python SDK's create_workspace, get, list, delete) -----------------------

ResourcePackage = Literal[
    "free_micro", "dev_micro", "dev_small", "dev_medium", "dev_large", "ds_small", "ds_medium",
    "ds_large", "ml_t4_small", "ml_t4_medium", "ml_t4_large", "ml_a100_small",
    "ml_a100_medium", "ml_a100_large", "ml_h100_small", "ml_h100_medium", "ml_h100_large",
    "compute_small", "compute_medium", "compute_large", "compute_xlarge",
]  # fmt: skip


class CreateWorkspaceRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str = Field(pattern=LABEL, description="A label, as a session's `user` is")
    workspace_id: str = Field(pattern=LABEL, description="What sessions name it by")
    name: str = Field(min_length=1, max_length=200)
    resource_package: ResourcePackage = Field(
        description="Kept as the workspace's label: a session's resources are its template's"
    )
    description: str | None = Field(None, max_length=2000)


class WorkspaceOut(BaseModel):
    id: str = Field(description="The workspace's id (its `workspace_id`)")
    workspace_id: str
    user_id: str
    name: str
    description: str | None
    resource_package: str
    status: Literal["active"]
    created_at: str
    current_sessions: int = Field(description="Its sessions that are not terminated")
    current_buckets: list[str] = Field(description="Tether makes none per workspace")
    current_pvcs: list[str] = Field(description="Tether makes none per workspace")


class WorkspaceRecords(RootModel[list[WorkspaceOut]]):
    """A JSON array, as the Python SDK's list_workspaces reads it."""


class WorkspaceDeleted(WorkspaceOut):
    deleted: bool
    message: str


def workspace_json(who: Principal, w: Workspace) -> WorkspaceOut:
    live = bootstrap.services().workspaces.live_sessions(who, w.workspace_id)
    return WorkspaceOut(
        id=w.workspace_id,
        workspace_id=w.workspace_id,
        user_id=w.user_id,
        name=w.name,
        description=w.description,
        resource_package=w.resource_package,
        status="active",
        created_at=w.created_at.isoformat(),
        current_sessions=live,
        current_buckets=[],
        current_pvcs=[],
    )


@router.route("/v1/workspaces", ["POST"], body=CreateWorkspaceRecord,
              answers={201: WorkspaceOut}, errors=(409,))  # fmt: skip
def create_workspace_record(request: Request, body: CreateWorkspaceRecord) -> Response:
    """Make a workspace: a named group for the caller's sessions (by `workspace_id`)."""
    who = principal(request)
    made = bootstrap.services().workspaces.create(
        who, body.user_id, body.workspace_id, body.name, body.resource_package, body.description
    )
    return json_response(workspace_json(who, made), 201)


@router.route("/v1/workspaces", ["GET"], answers={200: WorkspaceRecords})
@router.route("/v1/workspaces/<user_id>", ["GET"], answers={200: WorkspaceRecords})
def list_workspace_records(request: Request, user_id: str | None = None) -> Response:
    """The caller's workspaces (of one user label, by the path's), oldest first."""
    who = principal(request)
    found = bootstrap.services().workspaces.listed(who, user_id)
    return json_response(WorkspaceRecords([workspace_json(who, w) for w in found]))


@router.route("/v1/workspaces/<user_id>/<workspace_id>", ["GET"], answers={200: WorkspaceOut})
def get_workspace_record(request: Request, user_id: str, workspace_id: str) -> Response:
    """One of the caller's workspaces."""
    who = principal(request)
    found = bootstrap.services().workspaces.get(who, user_id, workspace_id)
    return json_response(workspace_json(who, found))


@router.route("/v1/workspaces/<user_id>/<workspace_id>", ["DELETE"],
              answers={200: WorkspaceDeleted}, errors=(409,))  # fmt: skip
def delete_workspace_record(request: Request, user_id: str, workspace_id: str) -> Response:
    """Forget a workspace (409 while sessions in it are not terminated)."""
    who = principal(request)
    gone = bootstrap.services().workspaces.delete(who, user_id, workspace_id)
    out = workspace_json(who, gone)
    return json_response(WorkspaceDeleted(deleted=True, message="Workspace deleted",
                                          **out.model_dump()))  # fmt: skip


# -- files in a session's storage (the Python SDK's upload_persist, download, list) ----------


class PersistQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    namespace: str = Field(pattern=LABEL, description="With `user`, picks the session: the "
                           "caller's newest running one of that namespace and user")  # fmt: skip
    user: str = Field(pattern=LABEL)
    session_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
                                   description="Tether's own: this session instead")  # fmt: skip


# A relative path of no control characters (files.relative refuses the rest).
RELATIVE = r"^([^/\x00-\x1f\x7f][^\x00-\x1f\x7f]*)?$"


class UploadQuery(PersistQuery):
    dst: str = Field("", max_length=MAX_PATH, pattern=RELATIVE,
                     description="Path under ~/persist (default: the file's own name); "
                     "relative, without `..`")  # fmt: skip


class DownloadQuery(PersistQuery):
    path: str = Field(min_length=1, max_length=MAX_PATH, pattern=RELATIVE,
                      description="Path under ~/persist")  # fmt: skip


class Uploaded(BaseModel):
    ok: bool
    bytes: int
    path: str = Field(description="Where it is, under ~/persist in the session's home")
    session_id: str


class PersistFile(BaseModel):
    name: str
    size: int
    modified: float = Field(description="Seconds since the epoch")
    path: str = Field(description="Under ~/persist")


class PersistList(BaseModel):
    files: list[PersistFile]
    total: int
    total_size: int
    namespace: str
    user: str
    session_id: str
    truncated: bool = Field(description="More files than a list holds (500)")


# A multipart boundary (RFC 2046), as the first line of a body names it.
BOUNDARY = re.compile(rb"--([0-9A-Za-z'()+_,./:=?-](?:[0-9A-Za-z'()+_,./:=? -]{0,68}"
                      rb"[0-9A-Za-z'()+_,./:=?-])?)\r?\n")  # fmt: skip


def uploaded_file(request: Request) -> tuple[str, bytes]:
    """The `file` part of a multipart body: its file name and bytes. The Python SDK sends it
    labelled with its session's `Content-Type: application/json`, which names no boundary:
    then the body's first line does."""
    raw = request.get_data(cache=True)
    boundary = request.mimetype_params.get("boundary", "")
    if request.mimetype != "multipart/form-data" or not boundary:
        found = BOUNDARY.match(raw)
        if found is None:
            raise Invalid("Send the file as multipart/form-data, in a part named 'file'",
                          field="file")  # fmt: skip
        boundary = found.group(1).decode("ascii")
    parser = FormDataParser(max_form_memory_size=1 << 20, max_form_parts=100)
    try:
        _, _, files = parser.parse(io.BytesIO(raw), "multipart/form-data", len(raw),
                                   {"boundary": boundary})  # fmt: skip
    except HTTPException:  # too many parts, or a field (not a file) over 1 MiB
        raise Invalid("The body has too many parts, or too large a field", field="file") from None
    part = files.get("file")
    if part is None:
        raise Invalid("The body has no file in a part named 'file'", field="file")
    return part.filename or "", part.read()


@router.route("/v1/fs/persist/upload", ["POST"], query=UploadQuery, answers={200: Uploaded},
              errors=(404, 409, 504), upload="file")  # fmt: skip
def upload_persist(request: Request, query: UploadQuery) -> Response:
    """Put a file (multipart, part `file`) under ~/persist in a running session's storage."""
    who, files = principal(request), bootstrap.services().files
    name, data = uploaded_file(request)
    if not (query.dst or name):
        raise Invalid("Name the file: `dst`, or the uploaded file's own name", field="dst")
    session = files.session_for(who, query.namespace, query.user, query.session_id)
    path = files.upload(who, session, query.dst or name, data)
    return json_response(Uploaded(ok=True, bytes=len(data), path=path, session_id=session.id))


@router.route("/v1/fs/persist/download", ["GET"], query=DownloadQuery, answers={200: None},
              errors=(404, 409, 504), media="application/octet-stream")  # fmt: skip
def download_persist(request: Request, query: DownloadQuery) -> Response:
    """A file under ~/persist in a running session's storage, as its bytes."""
    who, files = principal(request), bootstrap.services().files
    session = files.session_for(who, query.namespace, query.user, query.session_id)
    path, data = files.download(who, session, query.path)
    disposition = f"attachment; filename*=UTF-8''{quote(posixpath.basename(path))}"
    return Response(data, mimetype="application/octet-stream",
                    headers={"Content-Disposition": disposition})  # fmt: skip


def persisted(f: StoredFile) -> PersistFile:
    return PersistFile(name=f.name, size=f.size, modified=f.modified, path=f.path)


@router.route("/v1/fs/persist/list", ["GET"], query=PersistQuery, answers={200: PersistList},
              errors=(404, 409, 504))  # fmt: skip
def list_persist(request: Request, query: PersistQuery) -> Response:
    """The files under ~/persist in a running session's storage."""
    who, files = principal(request), bootstrap.services().files
    session = files.session_for(who, query.namespace, query.user, query.session_id)
    found, more = files.listing(who, session)
    return json_response(
        PersistList(
            files=[persisted(f) for f in found],
            total=len(found),
            total_size=sum(f.size for f in found),
            namespace=query.namespace,
            user=query.user,
            session_id=session.id,
            truncated=more,
        )
    )


# -- starbase's storage (vaults and drives): Tether keeps none ------------------------------

NO_REUSABLE_STORAGE = (
    "Tether keeps no reusable vaults or drives: each session has its own storage (its home; "
    "files: /v1/fs/persist)"
)


class CreateStorage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workspace_id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    size_gb: Annotated[int, Field(ge=1, le=65_536), INTEGRAL] = 10
    auto_mount: bool = True
    mount_path: str | None = Field(None, max_length=MAX_PATH)
    access_mode: str = Field("RW", max_length=16)


class StorageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workspace_id: str = Field(min_length=1, max_length=200)


class StorageDefaults(BaseModel):
    bucket_id: str | None
    filestore_id: str | None


class StorageList(BaseModel):
    workspace_id: str
    resources: list[dict[str, Any]] = Field(description="Always empty: see the message above")
    defaults: StorageDefaults


class SetDefaults(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket_id: str | None = Field(None, max_length=200)
    filestore_id: str | None = Field(None, max_length=200)


class DefaultsSet(BaseModel):
    workspace_id: str
    defaults: StorageDefaults
    results: dict[str, bool]


class UpdateStorage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    is_default: bool | None = None
    auto_mount: bool | None = None
    mount_path: str | None = Field(None, max_length=MAX_PATH)
    access_mode: str | None = Field(None, max_length=16)


@router.route("/v1/storage/buckets", ["POST"], body=CreateStorage, answers=UNSUPPORTED)
@router.route("/v1/storage/filestores", ["POST"], body=CreateStorage, answers=UNSUPPORTED)
def create_storage(request: Request, body: CreateStorage) -> Response:
    """Not supported: a vault (bucket) or drive (filestore) shared by sessions (501)."""
    principal(request)
    raise Unsupported(f"Creating a vault or a drive is not supported. {NO_REUSABLE_STORAGE}.")


@router.route("/v1/storage", ["GET"], query=StorageQuery, answers={200: StorageList})
def list_storage(request: Request, query: StorageQuery) -> Response:
    """A workspace's vaults and drives: none."""
    principal(request)
    none = StorageDefaults(bucket_id=None, filestore_id=None)
    return json_response(StorageList(workspace_id=query.workspace_id, resources=[],
                                     defaults=none))  # fmt: skip


def _no_storage(resource_id: str) -> NotFound:
    return NotFound(f"Storage resource '{resource_id}' not found. {NO_REUSABLE_STORAGE}.")


@router.route("/v1/storage/workspaces/<workspace_id>/defaults", ["POST"], body=SetDefaults,
              answers={200: DefaultsSet})  # fmt: skip
def set_storage_defaults(request: Request, workspace_id: str, body: SetDefaults) -> Response:
    """A workspace's default vault and drive: there are none to choose (404 for any named)."""
    principal(request)
    if body.bucket_id or body.filestore_id:
        raise _no_storage(body.bucket_id or body.filestore_id or "")
    none = StorageDefaults(bucket_id=None, filestore_id=None)
    return json_response(DefaultsSet(workspace_id=workspace_id, defaults=none, results={}))


STORAGE_WORDS = '<segment("buckets", "filestores", "workspaces"):resource_id>'
NONE_HERE: dict[int, type[BaseModel] | None] = {404: Error}  # there is never one


@router.route(f"/v1/storage/{STORAGE_WORDS}", ["PATCH"], body=UpdateStorage, answers=NONE_HERE)
def update_storage(request: Request, resource_id: str, body: UpdateStorage) -> Response:
    """A vault's or drive's settings: there are none (404)."""
    principal(request)
    raise _no_storage(resource_id)


@router.route(f"/v1/storage/{STORAGE_WORDS}", ["DELETE"], answers=NONE_HERE)
def delete_storage(request: Request, resource_id: str) -> Response:
    """Delete a vault or drive: there are none (404)."""
    principal(request)
    raise _no_storage(resource_id)


# -- templates (onmemos-sdk's TemplateService) -----------------------------------------------

Category = Literal[
    "development", "data_science", "web_development", "machine_learning", "testing", "custom"
]  # fmt: skip
CATEGORIES: tuple[str, ...] = get_args(Category)
USER_TYPES = ["free", "pro", "enterprise", "admin"]
DEFAULT_TTL = 60


class TemplatesQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    category: Category | None = None
    user_type: Literal["free", "pro", "enterprise", "admin"] | None = Field(
        None, description="Every template is open to every user type"
    )
    tags: str | None = Field(None, max_length=2000, description="Comma-separated: any of them")
    popular: bool = Field(False, description="Tether keeps no usage ranking: the same list")
    limit: int = Field(10, ge=1, le=1000)


class SearchQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: str = Field(max_length=200, description="In the name, description or tags")
    category: Category | None = None
    limit: int = Field(10, ge=1, le=1000)


class TemplateOut(BaseModel):
    """A template as onmemos-sdk's SessionTemplate reads it."""

    template_id: str = Field(description="Its name, as sessions name it")
    name: str = Field(description="Its display name")
    description: str
    category: Category = Field(description="Tether's category, else `custom`")
    user_types: list[str]
    is_public: bool
    image_type: Literal["custom"] = Field(description="Its own image (`image`)")
    image: str
    resources: dict[str, str]
    storage_type: Literal["ephemeral", "persistent_volume"] = Field(
        description="`persistent_volume`: its home outlives hibernation"
    )
    mount_path: str = Field(description="The home")
    default_ttl_minutes: int
    max_ttl_minutes: int
    env_vars: dict[str, str]
    tags: list[str]
    requires_gpu: bool
    requires_storage: bool
    is_featured: bool
    is_experimental: bool


class TemplateListOut(BaseModel):
    templates: list[TemplateOut]
    total: int
    categories: list[Category]
    featured_count: int
    experimental_count: int


class CategoryOut(BaseModel):
    id: Category
    category: Category
    name: str
    template_count: int


class Categories(BaseModel):
    categories: list[CategoryOut]


class TemplateStats(BaseModel):
    template_id: str
    total_usage: int = Field(description="The caller's sessions of it on record (terminated "
                             "ones are kept TETHER_SESSION_RETENTION)")  # fmt: skip
    active_sessions: int = Field(description="Of those, the ones not terminated")


class TemplateConfig(BaseModel):
    """A session's configuration, as a create would send it."""

    model_config = ConfigDict(extra="allow")


class Validation(BaseModel):
    template_id: str
    is_valid: bool
    errors: list[str]
    warnings: list[str]
    suggestions: list[str]


def category_of(t: Template) -> str:
    word = re.sub(r"[\s-]+", "_", t.category.strip().lower())
    return word if word in CATEGORIES else "custom"


def template_json(t: Template) -> TemplateOut:
    return TemplateOut(
        template_id=t.name,
        name=t.display_name or t.name,
        description=t.description,
        category=category_of(t),  # type: ignore[arg-type]
        user_types=USER_TYPES,
        is_public=True,
        image_type="custom",
        image=t.image,
        resources=t.resources,
        storage_type="persistent_volume" if t.persistent_home else "ephemeral",
        mount_path=HOME,
        default_ttl_minutes=DEFAULT_TTL,
        max_ttl_minutes=MAX_TTL_MINUTES,
        env_vars=t.env,
        tags=t.tags,
        requires_gpu=False,
        requires_storage=t.persistent_home,
        is_featured=False,
        is_experimental=False,
    )


def template_list(found: list[Template], limit: int) -> Response:
    shown = [template_json(t) for t in found[:limit]]
    return json_response(
        TemplateListOut(
            templates=shown,
            total=len(shown),
            categories=sorted({t.category for t in shown}),
            featured_count=0,
            experimental_count=0,
        )
    )


def _templates(category: str | None) -> list[Template]:
    found = bootstrap.services().templates.list()
    return [t for t in found if category is None or category_of(t) == category]


@router.route("/v1/templates", ["GET"], query=TemplatesQuery, answers={200: TemplateListOut})
def list_templates(request: Request, query: TemplatesQuery) -> Response:
    """The templates sessions start from (filtered by category and tags)."""
    principal(request)
    wanted = {t.strip() for t in (query.tags or "").split(",") if t.strip()}
    found = [t for t in _templates(query.category) if not wanted or wanted & set(t.tags)]
    return template_list(found, query.limit)


@router.route("/v1/templates/search", ["GET"], query=SearchQuery,
              answers={200: TemplateListOut})  # fmt: skip
def search_templates(request: Request, query: SearchQuery) -> Response:
    """Templates whose name, description or tags hold `q`."""
    principal(request)
    q = query.q.lower()

    def matches(t: Template) -> bool:
        words = [t.name, t.display_name or "", t.description, *t.tags]
        return any(q in w.lower() for w in words)

    return template_list([t for t in _templates(query.category) if matches(t)], query.limit)


@router.route("/v1/templates/popular/<int(max=1000):limit>", ["GET"],
              answers={200: TemplateListOut})  # fmt: skip
def popular_templates(request: Request, limit: int) -> Response:
    """Templates (Tether keeps no usage ranking: the list, to `limit`)."""
    principal(request)
    return template_list(_templates(None), limit)


@router.route("/v1/templates/categories", ["GET"], answers={200: Categories})
@router.route("/v1/templates/categories/list", ["GET"], answers={200: Categories})
def template_categories(request: Request) -> Response:
    """OnMemOS's template categories, with how many templates each has."""
    principal(request)
    counts = Counter(category_of(t) for t in _templates(None))
    return json_response(
        Categories(
            categories=[
                CategoryOut(
                    id=c,
                    category=c,
                    name=c.replace("_", " ").title(),  # type: ignore[arg-type]
                    template_count=counts[c],
                )
                for c in CATEGORIES
            ]
        )
    )


TEMPLATE = '<segment("search", "categories", "popular"):template_id>'


@router.route(f"/v1/templates/{TEMPLATE}", ["GET"], answers={200: TemplateOut})
def get_template(request: Request, template_id: str) -> Response:
    """One template."""
    principal(request)
    return json_response(template_json(bootstrap.services().templates.get(template_id)))


@router.route(f"/v1/templates/{TEMPLATE}/stats", ["GET"], answers={200: TemplateStats})
def template_stats(request: Request, template_id: str) -> Response:
    """How many of the caller's sessions use the template."""
    who, services = principal(request), bootstrap.services()
    services.templates.get(template_id)
    sessions = services.sessions
    total = sessions.listed(who, include_terminated=True, limit=1, template=template_id)
    live = sessions.listed(who, limit=1, template=template_id)
    return json_response(
        TemplateStats(template_id=template_id, total_usage=total.total, active_sessions=live.total)
    )


@router.route(f"/v1/templates/{TEMPLATE}/validate", ["POST"], body=TemplateConfig,
              answers={200: Validation})  # fmt: skip
def validate_template_config(request: Request, template_id: str, body: TemplateConfig) -> Response:
    """Whether a session create with this configuration and template would be accepted."""
    principal(request)
    bootstrap.services().templates.get(template_id)
    config = body.model_extra or {}
    errors: list[str] = []
    try:  # the body as a create reads it (its bytes: JSON's numbers unbounded, as they came)
        CreateSession.model_validate_json(request.get_data(cache=True) or b"{}", strict=True)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                  for e in exc.errors()]  # fmt: skip
    if config.get("template", template_id) != template_id:
        errors.append("template: the path names the template")
    ignored = sorted(set(config) - set(CreateSession.model_fields))
    warnings = [f"'{name}' is not used by Tether" for name in ignored]
    suggestions = ["A session's resources are its template's: choose the template for them"]
    return json_response(
        Validation(
            template_id=template_id,
            is_valid=not errors,
            errors=errors,
            warnings=warnings,
            suggestions=suggestions if ignored else [],
        )
    )


# -- cost estimation: Tether does not price sessions -----------------------------------------

NO_COSTS = (
    "Cost estimation is not supported by Tether: it does not price or bill sessions. A "
    "session's resources are its template's (/v1/templates)."
)


@router.route("/v1/cost-estimation/template/<template_id>", ["GET"], answers=UNSUPPORTED)
@router.route("/v1/cost-estimation/rates", ["GET"], answers=UNSUPPORTED)
@router.route("/v1/cost-estimation/calculator", ["GET"], answers=UNSUPPORTED)
@router.route("/v1/cost-estimation/estimate", ["POST"], answers=UNSUPPORTED)
@router.route("/v1/cost-estimation/compare", ["POST"], answers=UNSUPPORTED)
def cost_estimation(request: Request, template_id: str | None = None) -> Response:
    """Not supported: Tether does not price sessions (501)."""
    principal(request)
    raise Unsupported(NO_COSTS)


@router.route("/health", ["GET"], public=True, answers={200: Health, 503: Health}, errors=())
def health(request: Request) -> Response:
    """Whether Tether and what it depends on are up (503 when degraded)."""
    report = bootstrap.services().health.report()
    if report["status"] == "healthy":
        return json_response(report)
    return json_response(report, 503, {"Retry-After": str(RETRY_AFTER)})


# -- the audit log (tether.service.audit), every surface's: for admins, read only -------------


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    actor: str | None = Field(None, max_length=256, description="The caller's user id")
    action: str | None = Field(
        None, max_length=256, description="`surface.operation`, or relay.connect/disconnect"
    )
    target: str | None = Field(None, max_length=256, description="A session's id, say")
    since: datetime | None = Field(None, description="Only records at or after this time")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=1000, description="A page's `next_cursor`")

    @field_validator("since", mode="before")
    @classmethod
    def _written(cls, since: object) -> object:
        if isinstance(since, str) and not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ].+", since):
            raise ValueError("an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")  # not a number
        return since

    @field_validator("since")
    @classmethod
    def _zoned(cls, since: datetime | None) -> datetime | None:
        if since is not None and since.tzinfo is None:
            raise ValueError("needs a time zone (Z or +hh:mm)")
        return since


class AuditEntry(BaseModel):
    id: str
    time: str = Field(description="When the call was made (UTC, to the microsecond)")
    actor: str | None = Field(
        description="Who: the caller's user id, or the username a sign-in named; null: unknown"
    )
    action: str = Field(description="`surface.operation` (onmemos.create_session), relay.connect")
    target: str = Field(description="What it was about (a session's id); empty: nothing named")
    result: str = Field(description="The HTTP status, or a relayed connection's ok/refused/closed")
    request_id: str = Field(description="The answer's X-Request-Id")


class AuditPage(BaseModel):
    records: list[AuditEntry] = Field(description="Newest first")
    next_cursor: str | None = Field(description="`cursor` for the page after this; null at the end")


@router.route("/v1/audit", ["GET"], query=AuditQuery, answers={200: AuditPage}, errors=(403,))
def audit_log(request: Request, query: AuditQuery) -> Response:
    """The audit log of every surface (admins only), newest first: no route changes it."""
    page = bootstrap.services().audit.query(
        principal(request), query.actor, query.action, query.target, query.since, query.limit,
        query.cursor,
    )  # fmt: skip
    records = [
        AuditEntry(
            time=r.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **r.model_dump(include={"id", "actor", "action", "target", "result", "request_id"}),
        )
        for r in page.items
    ]
    return json_response(AuditPage(records=records, next_cursor=page.next_cursor))


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="OnMemOS v3 (Tether)",
        version="3.0",
        description="Workspaces: sessions, the legacy Cloud Run workspaces API, command "
        "execution, streamed commands, background processes, files and preview links. "
        "WebSockets are not described here: the shell at /v1/sessions/{id}/shell (a GET "
        "without an Upgrade answers the connection info), a streamed command at "
        "/v1/sessions/{id}/exec/ws, a process's output at its `output` path, and a port's "
        "traffic at /v1/sessions/{id}/ports/{port}/{path}.",
        error=Error,
        security={
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
    )


# The relay's calls, on this router so that the document describes them.
from tether.surfaces import onmemos_live, onmemos_recordings  # noqa: E402, F401

openapi.serve(router, "onmemos", document)
