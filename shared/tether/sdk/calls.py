"""Requests and responses of the API, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
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
    408: errors.Timeout,
    409: errors.Conflict,
    422: errors.Unprocessable,
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
    headers: dict[str, str] = field(default_factory=dict)

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
    headers = dict(call.headers)
    if call.idempotency_key is not None:
        headers["Idempotency-Key"] = call.idempotency_key
    if headers:
        options["headers"] = headers
    if call.timeout is not None:
        options["timeout"] = call.timeout
    return options


def result(response: httpx.Response) -> Any:
    """The JSON body, or the error tree's exception for the status, carrying `detail` (and
    in `details`, the status and what the body's `details` say: Kubently's `code`, `field`,
    the refused `argument`, a timed-out command's `operation_id` and `output`)."""
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
    said = body.get("details") if isinstance(body, dict) else None
    said = said if isinstance(said, dict) else {}
    field_ = said.get("field")
    exc = cls(str(detail), field=field_ if isinstance(field_, str) else None)
    exc.details.update((k, v) for k, v in said.items() if k != "field")
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


# -- Kubently: clusters, debug sessions, kubectl ------------------------------------------------

# An operation still in these states is not done: it waits for its cluster or for an admin.
OPERATION_WAITING = ("pending", "awaiting_approval")
APPROVAL_WAIT = 300.0  # seconds `kubectl` waits for an admin's decision, by default


def clusters() -> Call:
    return Call("GET", "/debug/clusters")


def cluster(cluster_id: str) -> Call:
    return Call("GET", f"/debug/clusters/{cluster_id}")


def create_debug_session(cluster_id: str, ttl: int, correlation_id: str | None = None) -> Call:
    body = _drop_none(
        {"cluster_id": cluster_id, "ttl_seconds": ttl, "correlation_id": correlation_id}
    )
    return Call("POST", "/debug/session", json=body, idempotency_key=new_key())


def get_debug_session(session_id: str) -> Call:
    return Call("GET", f"/debug/session/{session_id}")


def end_debug_session(session_id: str) -> Call:
    # JSON asked for: the server answers 200 with a body (else 204, as Kubently's does).
    return Call("DELETE", f"/debug/session/{session_id}", headers={"Accept": "application/json"})


def kubectl(
    cluster_id: str,
    args: tuple[str, ...] | list[str],
    namespace: str | None,
    timeout: int,
    session_id: str | None,
    correlation_id: str | None,
    queued: bool = False,
) -> Call:
    """`POST /debug/execute` (`queued`: `/debug/execute/async`) with `args` as kubectl's argv,
    verb first and no `command_type` (the server takes the verb from `args[0]`). `namespace`
    is sent only when given: without it, the server's default namespace ("default") is added
    where the args name none (`-n`, `-A`). Not retried: each try is a command in the audit."""
    if not args:
        raise errors.Invalid("kubectl needs its arguments, verb first: ('get', 'pods')",
                             field="args")  # fmt: skip
    body = _drop_none(
        {
            "cluster_id": cluster_id,
            "args": list(args),
            "namespace": namespace,
            "timeout_seconds": timeout,
            "session_id": session_id,
            "correlation_id": correlation_id,
        }
    )
    if queued:
        return Call("POST", "/debug/execute/async", json=body)
    return Call("POST", "/debug/execute", json=body, timeout=timeout + 30)


def operation(operation_id: str) -> Call:
    return Call("GET", f"/debug/operations/{operation_id}")


def operation_poll(
    wait: float | None, on_wait: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    """tenacity's arguments for polling an operation until it is done: a backoff from 0.25 s
    to 5 s between reads, for `wait` seconds (None: until it is done). When the time is up the
    last operation read is the outcome, still waiting. `on_wait(operation)` is called before
    each pause (a CLI's progress)."""
    options: dict[str, Any] = {
        "retry": tenacity.retry_if_result(lambda op: op.get("status") in OPERATION_WAITING),
        "wait": tenacity.wait_exponential(multiplier=0.25, min=0.25, max=5),
        "stop": tenacity.stop_never if wait is None else tenacity.stop_after_delay(wait),
        "retry_error_callback": lambda state: state.outcome.result(),
    }
    if on_wait is not None:
        options["before_sleep"] = lambda state: on_wait(state.outcome.result())
    return options


def kubectl_outcome(op: dict[str, Any], wait: float | None) -> dict[str, Any]:
    """The kubectl result of a finished operation, as `POST /debug/execute` answers it; for
    one that ran out of its timeout, was denied, or is still waiting after `wait` seconds,
    the error the synchronous call would raise (`Timeout` code TIMEOUT, `Forbidden` code
    DENIED, `Timeout` code AWAITING_APPROVAL or PENDING), naming the operation."""
    op_id = op.get("operation_id")
    status = op.get("status")
    if status == "denied":
        raise errors.Forbidden(
            f"Operation {op_id} was denied by {op.get('decided_by') or 'an admin'}",
            code="DENIED", operation_id=op_id, decided_by=op.get("decided_by"),
        )  # fmt: skip
    if status in OPERATION_WAITING:
        what = "an admin's approval" if status == "awaiting_approval" else "its cluster"
        raise errors.Timeout(
            f"Operation {op_id} is still waiting for {what} after {wait or 0:g} s; it stays "
            "queued (read it with operation())",
            code=str(status).upper(), operation_id=op_id,
        )  # fmt: skip
    run: dict[str, Any] = op.get("result") or {}
    if run.get("status") == "timeout":
        raise errors.Timeout(
            run.get("error") or f"Operation {op_id} timed out",
            code="TIMEOUT", command_id=run.get("command_id"), operation_id=op_id,
            output=run.get("output"),
        )  # fmt: skip
    return run
