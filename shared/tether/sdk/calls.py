"""Requests and responses of the API, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import tenacity

from tether import errors

_BY_STATUS: dict[int, type[errors.TetherError]] = {
    400: errors.Invalid,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    429: errors.RateLimited,
    503: errors.Unavailable,
    504: errors.Timeout,
}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # How long the server may take, beyond the client's default (exec waits for the command).
    timeout: float | None = None
    # A create's: the same on every try, so a retry after a lost answer creates nothing twice.
    idempotency_key: str | None = None

    @property
    def retryable(self) -> bool:
        return self.method in ("GET", "HEAD", "DELETE") or self.idempotency_key is not None


def retry_policy(call: Call) -> dict[str, Any]:
    """tenacity's arguments for `call`: a request that can be sent again (a read, a delete, a
    create with its Idempotency-Key) is, up to three times, when the connection failed or its
    answer was lost; others once."""
    return {
        "retry": tenacity.retry_if_exception_type(httpx.TransportError),
        "stop": tenacity.stop_after_attempt(3 if call.retryable else 1),
        "wait": tenacity.wait_exponential(multiplier=0.2, max=2),
        "reraise": True,
    }


def client_options(base_url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    """What both clients give their httpx client."""
    headers = {"X-API-Key": api_key} if api_key else {}
    return {"base_url": base_url.rstrip("/"), "headers": headers, "timeout": timeout}


def request_options(call: Call) -> dict[str, Any]:
    """The arguments of `httpx.(Async)Client.request` for `call`."""
    options: dict[str, Any] = {"json": call.json, "params": call.params}
    if call.idempotency_key is not None:
        options["headers"] = {"Idempotency-Key": call.idempotency_key}
    if call.timeout is not None:
        options["timeout"] = call.timeout
    return options


def result(response: httpx.Response) -> Any:
    """The JSON body, or the error tree's exception for the status, carrying `detail`."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail = body["detail"]
    else:  # not Tether's error shape: say what answered, not the page it sent
        detail = f"{response.status_code} {response.reason_phrase} from {response.url}"
    cls = _BY_STATUS.get(response.status_code, errors.TetherError)
    exc = cls(str(detail))
    exc.details["status"] = response.status_code
    raise exc


def new_key() -> str:
    """An Idempotency-Key for one create (the same on each retry of it)."""
    return uuid.uuid4().hex


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def create_session(spec: dict[str, Any], idempotency_key: str | None = None) -> Call:
    key = idempotency_key or new_key()
    return Call("POST", "/v1/sessions", json=_drop_none(spec), idempotency_key=key)


def get_session(session_id: str) -> Call:
    return Call("GET", f"/v1/sessions/{session_id}")


def list_sessions(namespace: str | None, user: str | None) -> Call:
    return Call("GET", "/v1/sessions", params=_drop_none({"namespace": namespace, "user": user}))


def execute_session(
    session_id: str,
    command: str,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Call:
    body = _drop_none({"command": command, "timeout": timeout, "env": env, "cwd": cwd})
    return Call("POST", f"/v1/sessions/{session_id}/execute", json=body, timeout=timeout + 30)


def delete_session(session_id: str) -> Call:
    return Call("DELETE", f"/v1/sessions/{session_id}")


def connect_session(session_id: str) -> Call:
    return Call("GET", f"/v1/sessions/{session_id}/connect")


def create_workspace(template: str, namespace: str, user: str, ttl: int | None) -> Call:
    body = _drop_none(
        {"template": template, "namespace": namespace, "user": user, "ttl_minutes": ttl}
    )
    return Call("POST", "/v1/cloudrun/workspaces", json=body, idempotency_key=new_key())


def workspace_action(workspace_id: str, action: str, params: dict[str, Any]) -> Call:
    timeout = float(params.get("timeout", 120))
    path = f"/v1/cloudrun/workspaces/{workspace_id}/{action}"
    return Call("POST", path, params=params, timeout=timeout + 30)


def delete_workspace(workspace_id: str) -> Call:
    return Call("DELETE", f"/v1/cloudrun/workspaces/{workspace_id}")


def health() -> Call:
    return Call("GET", "/health")


def health_report(response: httpx.Response) -> dict[str, Any]:
    """/health's body: 200 or 503, both carry the report."""
    if response.status_code not in (200, 503):
        result(response)
    body: dict[str, Any] = response.json()
    return body


def session_spec(
    template: str,
    namespace: str,
    user: str,
    provider: str,
    ttl_minutes: int | None,
    long_lived: bool,
) -> dict[str, Any]:
    return {
        "template": template,
        "namespace": namespace,
        "user": user,
        "provider": provider,
        "ttl_minutes": ttl_minutes,
        "long_lived": long_lived,
    }
