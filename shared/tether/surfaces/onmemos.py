"""OnMemOS v3 surface: `/v1/sessions` (unified) and `/v1/cloudrun/workspaces` (legacy).

Errors are `{"detail": "..."}`; auth is the `X-API-Key` header.
"""

from __future__ import annotations

import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Session, SessionRequest, utcnow
from tether.errors import TetherError
from tether.surfaces.http import Router, json_response, parse_body, parse_query

LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
MAX_TTL_MINUTES = 7 * 24 * 60
MAX_TIMEOUT = 3600


def render_error(error: TetherError, status: int) -> Response:
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return json_response({"detail": error.message}, status, headers)


router = Router(render_error)


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: Literal["auto", "cloud_run", "gke", "workstations"] = "auto"
    template: str = Field("python", min_length=1, max_length=63)
    namespace: str = Field("default", pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: int | None = Field(None, ge=1, le=MAX_TTL_MINUTES)
    long_lived: bool = False


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="ignore")

    template: str = Field("python", min_length=1, max_length=63)
    namespace: str = Field("default", pattern=LABEL)
    user: str = Field("default", pattern=LABEL)
    ttl_minutes: int | None = Field(None, ge=1, le=MAX_TTL_MINUTES)


class Execute(BaseModel):
    command: str = Field(min_length=1, max_length=100_000)
    timeout: float = Field(120, gt=0, le=MAX_TIMEOUT)


class ListFilter(BaseModel):
    namespace: str | None = None
    user: str | None = None
    include_terminated: bool = False


class RunPython(BaseModel):
    code: str = Field(min_length=1, max_length=100_000)
    timeout: float = Field(120, gt=0, le=MAX_TIMEOUT)


def principal(request: Request) -> Principal:
    """X-API-Key as the spec says; a Bearer token (JWT or key) works on every surface too."""
    key, bearer = request.headers.get("X-API-Key"), request.headers.get("Authorization")
    auth = bootstrap.services().auth
    return auth.authenticate(bearer, None) if bearer and not key else auth.principal_for_key(key)


def session_json(s: Session) -> dict[str, Any]:
    live = s.state not in (SessionState.TERMINATING, SessionState.TERMINATED)
    status = "expired" if live and s.expired(utcnow()) else s.state.value
    return {
        "id": s.id,
        "provider": s.platform,
        "namespace": s.namespace,
        "user": s.user,
        "template": s.template,
        "status": status,
        "url": s.url,
        "websocket": f"/v1/cloudrun/workspaces/{s.id}/shell",
        "ssh": False,
        "details": {**s.details, "agent_id": s.agent_id, "message": s.message},
        "long_lived": s.long_lived,
        "created_at": s.created_at.isoformat(),
        "expires_at": s.expires_at.isoformat() if s.expires_at else None,
    }


def _run(request: Request, session_id: str, command: str, timeout: float) -> Response:
    result = bootstrap.services().sessions.execute(principal(request), session_id, command, timeout)
    return json_response(result.model_dump())


# -- unified API ------------------------------------------------------------------------------


def _create(who: Principal, req: SessionRequest) -> Response:
    session = bootstrap.services().sessions.create(who, req)
    return json_response(session_json(session), 201)


def _list(request: Request, key: str) -> Response:
    who = principal(request)
    f = parse_query(request, ListFilter)
    sessions = bootstrap.services().sessions.visible(
        who, f.include_terminated, namespace=f.namespace, user=f.user
    )
    items = [session_json(s) for s in sessions]
    return json_response({key: items, "total": len(items)})


@router.route("/v1/sessions", ["POST"])
def create_session(request: Request) -> Response:
    who = principal(request)
    body = parse_body(request, CreateSession)
    return _create(who, SessionRequest(**body.model_dump()))


@router.route("/v1/sessions", ["GET"])
def list_sessions(request: Request) -> Response:
    return _list(request, "sessions")


@router.route("/v1/sessions/<session_id>", ["GET"])
def get_session(request: Request, session_id: str) -> Response:
    session = bootstrap.services().sessions.get(principal(request), session_id)
    return json_response(session_json(session))


@router.route("/v1/sessions/<session_id>", ["DELETE"])
def delete_session(request: Request, session_id: str) -> Response:
    session = bootstrap.services().sessions.delete(principal(request), session_id)
    return json_response({"deleted": True, **session_json(session)})


@router.route("/v1/sessions/<session_id>/execute", ["POST"])
def execute_session(request: Request, session_id: str) -> Response:
    who = principal(request)
    body = parse_body(request, Execute)
    result = bootstrap.services().sessions.execute(who, session_id, body.command, body.timeout)
    return json_response(result.model_dump())


@router.route("/v1/sessions/<session_id>/connect", ["GET"])
def connect_session(request: Request, session_id: str) -> Response:
    session = bootstrap.services().sessions.usable(principal(request), session_id)
    base = request.host_url.rstrip("/")
    ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
    return json_response(
        {
            "session_id": session.id,
            "provider": session.platform,
            "status": session.state.value,
            "url": session.url,
            "execute": f"{base}/v1/sessions/{session.id}/execute",
            "websocket": f"{ws_base}/v1/sessions/{session.id}/shell",
            "ssh": False,
            "expires_at": session.expires_at.isoformat() if session.expires_at else None,
        }
    )


# -- legacy Cloud Run API ---------------------------------------------------------------------


@router.route("/v1/cloudrun/workspaces", ["POST"])
def create_workspace(request: Request) -> Response:
    who = principal(request)
    body = parse_body(request, CreateWorkspace)
    # The legacy API names no provider: Cloud Run when a cloud_run agent is online, else any.
    return _create(who, SessionRequest(**body.model_dump(), provider="auto", prefer=("cloud_run",)))


@router.route("/v1/cloudrun/workspaces", ["GET"])
def list_workspaces(request: Request) -> Response:
    return _list(request, "workspaces")


@router.route("/v1/cloudrun/workspaces/<session_id>", ["GET"])
def get_workspace(request: Request, session_id: str) -> Response:
    return get_session(request, session_id)


@router.route("/v1/cloudrun/workspaces/<session_id>", ["DELETE"])
def delete_workspace(request: Request, session_id: str) -> Response:
    return delete_session(request, session_id)


@router.route("/v1/cloudrun/workspaces/<session_id>/execute", ["POST"])
@router.route("/v1/cloudrun/workspaces/<session_id>/runsh", ["POST"])
def execute_workspace(request: Request, session_id: str) -> Response:
    q = parse_query(request, Execute)
    return _run(request, session_id, q.command, q.timeout)


@router.route("/v1/cloudrun/workspaces/<session_id>/runpython", ["POST"])
def runpython_workspace(request: Request, session_id: str) -> Response:
    q = parse_query(request, RunPython)
    return _run(request, session_id, f"python3 -c {shlex.quote(q.code)}", q.timeout)


def health(request: Request) -> Response:
    report = bootstrap.services().health.report()
    return json_response(report, 200 if report["status"] == "healthy" else 503)
