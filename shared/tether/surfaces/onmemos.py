"""OnMemOS v3 surface: `/v1/sessions` (unified) and `/v1/cloudrun/workspaces` (legacy).

Errors are `{"detail": "..."}`; auth is the `X-API-Key` header.

Besides the reference document, this serves what OnMemOS' own clients send and read
(masterFoad/memos at 3952b06: the Python SDK `sdk/python`, the packaged SDKs `starbase` and
`onmemos-sdk`, and the real server under `server/api`): execute's fields in the query string,
`workspace_id` on a session, the legacy answers' `service_url` and `bucket_name`, paginated
lists, `ws-token`, pause and resume.
"""

from __future__ import annotations

import shlex
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, field_validator
from pydantic.json_schema import WithJsonSchema
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.core.lifecycle import CommandState, SessionState
from tether.core.models import Command as CommandRecord
from tether.core.models import ExecResult, Principal, Session, SessionRequest, utcnow
from tether.errors import TetherError
from tether.service.pages import Page
from tether.surfaces import openapi
from tether.surfaces.http import (
    INTEGRAL,
    Router,
    json_response,
    may,
    public_details,
)

LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
MAX_TTL_MINUTES = 7 * 24 * 60
MAX_TIMEOUT = 3600
# Code in a query string (the legacy API) percent-encodes to up to 12 bytes a character, and a
# request head is at most 64 KiB (tether.origin.guard): this keeps every valid one within it.
MAX_QUERY_CODE = 4096
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
NO_NUL = r"^[^\x00]*$"  # a command line, a variable or a directory cannot carry one
# OnMemOS groups sessions in a workspace (`workspace_id`); Tether keeps it as a tag.
WORKSPACE_TAG = "onmemos.workspace_id="


class Error(BaseModel):
    """Every OnMemOS error."""

    detail: str


def render_error(error: TetherError, status: int) -> Response:
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return json_response({"detail": error.message}, status, headers)


TtlMinutes = Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES), INTEGRAL]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]


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
    auth = bootstrap.services().auth
    who = auth.authenticate(bearer, None) if bearer and not key else auth.principal_for_key(key)
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


def session_json(s: Session, base: str) -> SessionOut:
    status = status_of(s)
    details = public_details(s.details)
    tagged = [t.removeprefix(WORKSPACE_TAG) for t in s.tags if t.startswith(WORKSPACE_TAG)]
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
        details={**details, "agent_id": s.agent_id, "message": s.message},
        bucket_name=details.get("bucket_name"),
        workspace_id=tagged[0] if tagged else s.namespace,
        k8s_namespace=details.get("k8s_namespace"),
        pod_name=details.get("pod_name"),
        service_name=details.get("service_name"),
        long_lived=s.long_lived,
        created_at=s.created_at.isoformat(),
        expires_at=s.expires_at.isoformat() if s.expires_at else None,
        ttl_minutes=ttl,
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
RAN = {200: ExecAnswer}
EXEC_ERRORS = (409, 504)  # not running; the command outlived its timeout


def _create(request: Request, who: Principal, req: SessionRequest) -> Response:
    session = bootstrap.services().sessions.create(who, req)
    return json_response(session_json(session, base_url(request)), 201)


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


@router.route("/v1/sessions", ["POST"], body=CreateSession, answers=CREATED, errors=(404,),
              idempotent=True)  # fmt: skip
def create_session(request: Request, body: CreateSession) -> Response:
    """Create a session from a template, on an agent of the provider asked for."""
    who = principal(request)
    fields = body.model_dump(exclude={"workspace_id", "namespace"})
    namespace = body.namespace or body.workspace_id or "default"
    tags = [WORKSPACE_TAG + body.workspace_id] if body.workspace_id else []
    return _create(request, who, SessionRequest(**fields, namespace=namespace, tags=tags))


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


@router.route("/health", ["GET"], public=True, answers={200: Health, 503: Health}, errors=())
def health(request: Request) -> Response:
    """Whether Tether and what it depends on are up (503 when degraded)."""
    report = bootstrap.services().health.report()
    return json_response(report, 200 if report["status"] == "healthy" else 503)


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="OnMemOS v3 (Tether)",
        version="3.0",
        description="Workspaces: sessions, the legacy Cloud Run workspaces API, command "
        "execution. The shell is a WebSocket at /v1/sessions/{id}/shell (not described here: "
        "a GET there without an Upgrade answers the connection info).",
        error=Error,
        security={
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
    )


openapi.serve(router, "onmemos", document)
