"""OnMemOS v3 surface: `/v1/sessions` (unified) and `/v1/cloudrun/workspaces` (legacy).

Errors are `{"detail": "..."}`; auth is the `X-API-Key` header.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.core.lifecycle import SessionState
from tether.core.models import ExecResult, Principal, Session, SessionRequest, utcnow
from tether.errors import TetherError
from tether.surfaces import openapi
from tether.surfaces.http import INTEGRAL, Router, json_response, may

LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
MAX_TTL_MINUTES = 7 * 24 * 60
MAX_TIMEOUT = 3600
# Code in a query string (the legacy API) percent-encodes to up to 12 bytes a character, and a
# request head is at most 64 KiB (tether.origin.guard): this keeps every valid one within it.
MAX_QUERY_CODE = 4096


class Error(BaseModel):
    """Every OnMemOS error."""

    detail: str


def render_error(error: TetherError, status: int) -> Response:
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return json_response({"detail": error.message}, status, headers)


router = Router(render_error, owner=lambda request: principal(request).id)


TtlMinutes = Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES), INTEGRAL]


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: Literal["auto", "cloud_run", "gke", "workstations"] = "auto"
    template: str = Field("python", min_length=1, max_length=63)
    namespace: str = Field("default", pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: TtlMinutes | None = None
    long_lived: bool = False


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="ignore")

    template: str = Field("python", min_length=1, max_length=63)
    namespace: str = Field("default", pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: TtlMinutes | None = None


class Execute(BaseModel):
    model_config = ConfigDict(extra="ignore")

    command: str = Field(min_length=1, max_length=100_000)
    timeout: float = Field(120, gt=0, le=MAX_TIMEOUT)


class ExecuteQuery(Execute):
    command: str = Field(min_length=1, max_length=MAX_QUERY_CODE)


class ListFilter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    namespace: str | None = None
    user: str | None = None
    include_terminated: bool = False


class RunPython(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(min_length=1, max_length=MAX_QUERY_CODE)
    timeout: float = Field(120, gt=0, le=MAX_TIMEOUT)


def principal(request: Request) -> Principal:
    """X-API-Key as the spec says; a Bearer token (JWT or key) works on every surface too."""
    key, bearer = request.headers.get("X-API-Key"), request.headers.get("Authorization")
    auth = bootstrap.services().auth
    who = auth.authenticate(bearer, None) if bearer and not key else auth.principal_for_key(key)
    return may(who, request.method)


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
    url: str | None
    websocket: str
    ssh: bool
    details: dict[str, Any]
    long_lived: bool
    created_at: str
    expires_at: str | None


class Deleted(SessionOut):
    deleted: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]
    total: int


class WorkspaceList(BaseModel):
    workspaces: list[SessionOut]
    total: int


class Connection(BaseModel):
    session_id: str
    provider: str
    status: Status
    url: str | None
    execute: str
    websocket: str
    ssh: bool
    expires_at: str | None


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["healthy", "degraded"]


def session_json(s: Session) -> SessionOut:
    live = s.state not in (SessionState.TERMINATING, SessionState.TERMINATED)
    status = "expired" if live and s.expired(utcnow()) else s.state.value
    return SessionOut(
        id=s.id,
        provider=s.platform,
        namespace=s.namespace,
        user=s.user,
        template=s.template,
        status=status,  # type: ignore[arg-type]
        url=s.url,
        websocket=f"/v1/cloudrun/workspaces/{s.id}/shell",
        ssh=False,
        details={**s.details, "agent_id": s.agent_id, "message": s.message},
        long_lived=s.long_lived,
        created_at=s.created_at.isoformat(),
        expires_at=s.expires_at.isoformat() if s.expires_at else None,
    )


def _run(request: Request, session_id: str, command: str, timeout: float) -> Response:
    result = bootstrap.services().sessions.execute(principal(request), session_id, command, timeout)
    return json_response(result)


# -- unified API ------------------------------------------------------------------------------

CREATED = {201: SessionOut}
RAN = {200: ExecResult}
EXEC_ERRORS = (409, 504)  # not running; the command outlived its timeout


def _create(who: Principal, req: SessionRequest) -> Response:
    session = bootstrap.services().sessions.create(who, req)
    return json_response(session_json(session), 201)


def _list(request: Request, query: ListFilter) -> list[SessionOut]:
    sessions = bootstrap.services().sessions.visible(
        principal(request), query.include_terminated, namespace=query.namespace, user=query.user
    )
    return [session_json(s) for s in sessions]


@router.route("/v1/sessions", ["POST"], body=CreateSession, answers=CREATED, errors=(404,),
              idempotent=True)  # fmt: skip
def create_session(request: Request, body: CreateSession) -> Response:
    """Create a session from a template, on an agent of the provider asked for."""
    who = principal(request)
    return _create(who, SessionRequest(**body.model_dump()))


@router.route("/v1/sessions", ["GET"], query=ListFilter, answers={200: SessionList})
def list_sessions(request: Request, query: ListFilter) -> Response:
    """The caller's sessions."""
    items = _list(request, query)
    return json_response(SessionList(sessions=items, total=len(items)))


@router.route("/v1/sessions/<session_id>", ["GET"], answers={200: SessionOut})
def get_session(request: Request, session_id: str) -> Response:
    """One session."""
    session = bootstrap.services().sessions.get(principal(request), session_id)
    return json_response(session_json(session))


@router.route("/v1/sessions/<session_id>", ["DELETE"], answers={200: Deleted}, errors=(409,))
def delete_session(request: Request, session_id: str) -> Response:
    """Terminate a session."""
    session = bootstrap.services().sessions.delete(principal(request), session_id)
    return json_response(Deleted(deleted=True, **session_json(session).model_dump()))


@router.route("/v1/sessions/<session_id>/execute", ["POST"], body=Execute, answers=RAN,
              errors=EXEC_ERRORS)  # fmt: skip
def execute_session(request: Request, session_id: str, body: Execute) -> Response:
    """Run a shell command in the session's workspace."""
    return _run(request, session_id, body.command, body.timeout)


@router.route("/v1/sessions/<session_id>/connect", ["GET"], answers={200: Connection},
              errors=(409,))  # fmt: skip
def connect_session(request: Request, session_id: str) -> Response:
    """How to reach a running session: its execute URL and shell WebSocket."""
    session = bootstrap.services().sessions.usable(principal(request), session_id)
    base = request.host_url.rstrip("/")
    ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
    return json_response(
        Connection(
            session_id=session.id,
            provider=session.platform,
            status=session.state.value,  # type: ignore[arg-type]
            url=session.url,
            execute=f"{base}/v1/sessions/{session.id}/execute",
            websocket=f"{ws_base}/v1/sessions/{session.id}/shell",
            ssh=False,
            expires_at=session.expires_at.isoformat() if session.expires_at else None,
        )
    )


# -- legacy Cloud Run API ---------------------------------------------------------------------


@router.route("/v1/cloudrun/workspaces", ["POST"], body=CreateWorkspace, answers=CREATED,
              errors=(404,), idempotent=True)  # fmt: skip
def create_workspace(request: Request, body: CreateWorkspace) -> Response:
    """Create a workspace (Cloud Run when a Cloud Run agent is online, else any)."""
    who = principal(request)
    return _create(who, SessionRequest(**body.model_dump(), provider="auto", prefer=("cloud_run",)))


@router.route("/v1/cloudrun/workspaces", ["GET"], query=ListFilter, answers={200: WorkspaceList})
def list_workspaces(request: Request, query: ListFilter) -> Response:
    """The caller's workspaces."""
    items = _list(request, query)
    return json_response(WorkspaceList(workspaces=items, total=len(items)))


@router.route("/v1/cloudrun/workspaces/<session_id>", ["GET"], answers={200: SessionOut})
def get_workspace(request: Request, session_id: str) -> Response:
    """One workspace."""
    return get_session(request, session_id)


@router.route("/v1/cloudrun/workspaces/<session_id>", ["DELETE"], answers={200: Deleted},
              errors=(409,))  # fmt: skip
def delete_workspace(request: Request, session_id: str) -> Response:
    """Terminate a workspace."""
    return delete_session(request, session_id)


@router.route("/v1/cloudrun/workspaces/<session_id>/execute", ["POST"], query=ExecuteQuery,
              answers=RAN, errors=EXEC_ERRORS)  # fmt: skip
@router.route("/v1/cloudrun/workspaces/<session_id>/runsh", ["POST"], query=ExecuteQuery,
              answers=RAN, errors=EXEC_ERRORS)  # fmt: skip
def execute_workspace(request: Request, session_id: str, query: ExecuteQuery) -> Response:
    """Run a shell command in the workspace (the command in the query string)."""
    return _run(request, session_id, query.command, query.timeout)


@router.route("/v1/cloudrun/workspaces/<session_id>/runpython", ["POST"], query=RunPython,
              answers=RAN, errors=EXEC_ERRORS)  # fmt: skip
def runpython_workspace(request: Request, session_id: str, query: RunPython) -> Response:
    """Run Python code in the workspace (the code in the query string)."""
    return _run(request, session_id, f"python3 -c {shlex.quote(query.code)}", query.timeout)


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
        "execution. The shell is a WebSocket at /v1/sessions/{id}/shell (not described here).",
        error=Error,
        security={
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
    )


openapi.serve(router, "onmemos", document)
