"""Requests and responses of the API, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import email.utils
import hashlib
import math
import posixpath
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import tenacity
from pydantic import BaseModel, ValidationError

from tether import errors
from tether.sdk.types import (
    CommandResult,
    FileInfo,
    ProcessInfo,
    SessionInfo,
    WrittenFile,
    parse,
)

_BY_STATUS: dict[int, type[errors.TetherError]] = {
    400: errors.Invalid,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    408: errors.Timeout,
    409: errors.Conflict,
    413: errors.Invalid,  # FILE_TOO_LARGE
    422: errors.Unprocessable,
    429: errors.RateLimited,
    501: errors.Unsupported,
    502: errors.Unavailable,  # PORT_UNREACHABLE, or a gateway in between
    503: errors.Unavailable,
    504: errors.Timeout,
    507: errors.Unavailable,  # NO_SPACE
}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # How long the server may take, beyond the client's default (exec waits for the command);
    # an httpx.Timeout where reads may pause without limit (a process's output, followed).
    timeout: float | httpx.Timeout | None = None
    # A create's: the same on every try, so a retry after a lost answer creates nothing twice.
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A POST that changes nothing when repeated (mkdir of an existing directory).
    repeatable: bool = False

    @property
    def retryable(self) -> bool:
        return (
            self.method in ("GET", "HEAD", "DELETE", "PUT")
            or self.idempotency_key is not None
            or self.repeatable
        )


@dataclass
class RetryPolicy:
    """When a client sends a call again: `Client(..., retry=RetryPolicy(attempts=2))`, or change
    `client.retry` in place (read at each call).

    A call that can be repeated safely (GET, HEAD, DELETE, PUT of a file's content, a create
    with its Idempotency-Key, which every create carries and keeps across its tries) is tried
    up to `attempts` times in all when the connection failed, its answer was lost, or the
    server answered one of `statuses`. Any other call (exec, pause, a process's stdin...) is
    tried again only when it could not connect at all (so it never reached the server).

    Between tries: the answer's `Retry-After` (seconds or an HTTP date) when it has one, else
    `backoff` seconds doubled each time, plus up to `backoff` of jitter, at most `max_backoff`.
    A `Retry-After` longer than `max_backoff` is not waited for: the error (`RateLimited`,
    `Unavailable`...) is raised at once with `details["retry_after"]`, for the caller to
    decide, since a try sooner than the server asked would only be refused again."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    statuses: tuple[int, ...] = (429, 502, 503, 504)

    def should_retry(self, call: Call, exc: BaseException) -> bool:
        if isinstance(exc, httpx.ConnectError):  # it never reached the server
            return True
        if not call.retryable:
            return False
        if isinstance(exc, httpx.TransportError):
            return True
        if isinstance(exc, errors.TetherError) and exc.details.get("status") in self.statuses:
            after = exc.details.get("retry_after")
            return after is None or after <= self.max_backoff
        return False

    def options(self, call: Call) -> dict[str, Any]:
        """tenacity's arguments for trying `call` under this policy."""
        return {
            "retry": tenacity.retry_if_exception(lambda exc: self.should_retry(call, exc)),
            "stop": tenacity.stop_after_attempt(max(1, self.attempts)),
            "wait": _PolicyWait(self),
            "reraise": True,
        }


class _PolicyWait(tenacity.wait.wait_base):
    """The answer's Retry-After when it said one, else an exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = tenacity.wait_exponential_jitter(
            initial=policy.backoff, max=policy.max_backoff, jitter=policy.backoff
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, errors.TetherError) and exc.details.get("retry_after") is not None:
            return max(0.0, min(float(exc.details["retry_after"]), self.policy.max_backoff))
        return float(self.backoff(retry_state))


def retry_after(value: str | None) -> float | None:
    """Seconds from now that a `Retry-After` header asks for (delta-seconds or an HTTP date);
    None when there is none or it says nothing readable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_policy(call: Call) -> dict[str, Any]:
    """tenacity's arguments for `call` under the default `RetryPolicy`."""
    return RetryPolicy().options(call)


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
    """The JSON body (None for an empty one), or the error tree's exception for the status,
    carrying `detail` (and in `details`: the status, the body's `code`, `retry_after` in
    seconds when the answer said one, and what the body's `details` say: Kubently's `code`,
    `field`, the refused `argument`, a timed-out command's `operation_id` and `output`)."""
    if response.is_success:
        return response.json() if response.content else None
    raise_for(response)


def raise_for(response: httpx.Response) -> None:
    """Nothing for a success; else what `result` raises (the body must have been read)."""
    if response.is_success:
        return
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
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        exc.details["code"] = body["code"]
    after = retry_after(response.headers.get("Retry-After"))
    if after is not None:
        exc.details["retry_after"] = after
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


# -- sessions' typed API: create, list, extend; exec streams, processes, files, ports ---------

CHUNK = 1 << 20  # bytes read from or written to a local file at a time
# A transfer's progress, told after each chunk: bytes so far, of how many (None: not known).
Progress = Callable[[int, int | None], None]


def counted(sent: int, total: int | None, progress: Progress | None) -> None:
    if progress is not None:
        progress(sent, total)


def length_of(response: httpx.Response) -> int | None:
    size = response.headers.get("Content-Length", "")
    return int(size) if size.isdigit() else None


def check_complete(got: int, total: int | None) -> None:
    """A download that ended short of its Content-Length is an error, not a file."""
    if total is not None and got != total:
        raise errors.Unavailable(f"the file's stream ended after {got} of {total} bytes")


# The most one request may carry to the relay (Cloud Run's bound on an HTTP/1 request): a
# larger file goes up in parts of this size, joined in the workspace.
UPLOAD_PART = 32 << 20
# While a session's status is one of these, create(wait=True) reads it again.
SETTLING = ("pending", "waking")


def session_path(session_id: str, *rest: str) -> str:
    """`/v1/sessions/{id}/...`, the id quoted (one the caller typed may hold anything)."""
    return "/".join([f"/v1/sessions/{quote(session_id, safe='')}", *rest])


def new_session(
    template: str,
    name: str | None,
    namespace: str | None,
    user: str | None,
    ttl_minutes: int | None,
    metadata: dict[str, str] | None,
) -> Call:
    """The API keeps no name of a session's own: `name` is kept as its metadata's "name"."""
    if name is not None:
        metadata = {"name": name, **(metadata or {})}
    spec = {"template": template, "namespace": namespace, "user": user,
            "ttl_minutes": ttl_minutes, "metadata": metadata}  # fmt: skip
    return create_session(spec)


def session(session_id: str) -> Call:
    return Call("GET", session_path(session_id))


def session_page(metadata: dict[str, str] | None, cursor: str | None) -> Call:
    """One page of the caller's sessions whose metadata has every pair of `metadata`."""
    params: dict[str, Any] = {"limit": 1000}
    if metadata:
        params["metadata"] = [f"{k}={v}" for k, v in metadata.items()]
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/v1/sessions", params=params)


def session_action(session_id: str, action: str, body: dict[str, Any] | None = None) -> Call:
    """pause, resume, extend: the session's answer waits for the move (up to a minute)."""
    return Call("POST", session_path(session_id, action), json=body, timeout=90)


def settle_poll(wait: float = 180.0) -> dict[str, Any]:
    """tenacity's arguments for reading a session until it is no longer starting or waking:
    a backoff from 0.1 s to 2 s, for up to `wait` seconds."""
    return {
        "retry": tenacity.retry_if_result(lambda info: info.status in SETTLING),
        "wait": tenacity.wait_exponential(multiplier=0.1, min=0.1, max=2),
        "stop": tenacity.stop_after_delay(wait),
        "retry_error_callback": lambda state: state.outcome.result(),
    }


def settled(info: SessionInfo) -> SessionInfo:
    """`info` if the session runs, else the error saying why it does not."""
    if info.status == "running":
        return info
    if info.status in SETTLING:
        raise errors.Timeout(f"Session {info.id} is still {info.status}", code="NOT_RUNNING",
                             session_id=info.id)  # fmt: skip
    raise errors.Unavailable(f"Session {info.id} did not start: it is {info.status}",
                             code="NOT_RUNNING", session_id=info.id)  # fmt: skip


def give_up(keep: bool, delete: Callable[[], object], exc: BaseException) -> None:
    """A session that did not start is deleted, unless kept, since the caller has no handle on
    it; failing that is noted on `exc`, the error to see."""
    if keep:
        return
    try:
        delete()
    except Exception as failed:
        exc.add_note(f"and deleting the session failed: {failed}")


def exec_stream(
    session_id: str,
    command: str,
    timeout: float,
    env: dict[str, str] | None,
    cwd: str | None,
    stdin: str | None,
) -> Call:
    body = _drop_none(
        {"command": command, "timeout": timeout, "env": env, "cwd": cwd, "stdin": stdin}
    )
    return Call("POST", session_path(session_id, "exec", "stream"), json=body,
                timeout=httpx.Timeout(30, read=timeout + 30))  # fmt: skip


def start_process(
    session_id: str, command: str, env: dict[str, str] | None, cwd: str | None
) -> Call:
    body = _drop_none({"command": command, "env": env, "cwd": cwd})
    return Call("POST", session_path(session_id, "processes"), json=body)


def processes(session_id: str) -> Call:
    return Call("GET", session_path(session_id, "processes"))


def process(session_id: str, pid: int, *rest: str, body: dict[str, Any] | None = None) -> Call:
    path = session_path(session_id, "processes", str(int(pid)), *rest)
    return Call("POST" if rest else "GET", path, json=body)


def process_output(session_id: str, pid: int) -> Call:
    """What the process printed (what is kept of it) and then live until it exits: a read may
    wait as long as the process prints nothing."""
    path = session_path(session_id, "processes", str(int(pid)), "output")
    return Call("GET", path, timeout=httpx.Timeout(30, read=None))


def files(method: str, session_id: str, path: str, *rest: str, **params: Any) -> Call:
    """A call on the file `path` (relative: under the home)."""
    where = session_path(session_id, "files", *rest)
    if method == "GET" and rest == ("content",):  # a large file streams for a while
        return Call("GET", where, params={"path": path}, timeout=httpx.Timeout(30, read=300))
    return Call(method, where, params={"path": path, **params}, repeatable=rest == ("mkdir",))


def file_upload(session_id: str, path: str, size: int | None) -> Call:
    """`PUT .../files/content`: its body, given by the client, is the file's bytes."""
    headers = {"Content-Type": "application/octet-stream"}
    if size is not None:  # the relay refuses one past its bound before a byte is sent
        headers["Content-Length"] = str(size)
    return Call("PUT", session_path(session_id, "files", "content"), params={"path": path},
                headers=headers, timeout=httpx.Timeout(30, read=300, write=300))  # fmt: skip


def check_written(answer: Any, sha256: str) -> WrittenFile:
    written = parse(WrittenFile, answer)
    if written.sha256 != sha256:
        raise errors.TetherError(
            f"{written.path} was stored with SHA-256 {written.sha256}, not that of the bytes "
            f"sent ({sha256})",
            code="DIGEST_MISMATCH",
        )
    return written


class PieceDigest:
    """The SHA-256s of one piece being sent, and of the whole file up to its end; a retry of
    the piece starts both over from where the piece began."""

    def __init__(self, before: hashlib._Hash) -> None:
        self.before = before
        self.restart()

    def restart(self) -> None:
        self.whole = self.before.copy()
        self.piece = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.whole.update(chunk)
        self.piece.update(chunk)


class Upload:
    """How `size` bytes go to the workspace's `remote` path: in one request when they fit
    UPLOAD_PART, else as pieces put beside it under hidden names, then joined by one command
    in the workspace that checks the whole file's SHA-256 before it renames it into place (a
    failed upload leaves the target as it was, and no pieces)."""

    def __init__(self, remote: str, size: int, part: int = UPLOAD_PART) -> None:
        self.remote, self.size = remote, size
        self.whole = hashlib.sha256()
        self.stored: list[WrittenFile] = []
        head, self.name = posixpath.split(remote)
        if size <= part:
            self.pieces = [(remote, 0, size)]
        else:
            token = uuid.uuid4().hex[:12]
            self.pieces = [
                (posixpath.join(head, f".{self.name}.{token}.part{i}"), at, min(part, size - at))
                for i, at in enumerate(range(0, size, part))
            ]
            self.joined_at = posixpath.join(head, f".{self.name}.{token}.joining")

    @property
    def in_parts(self) -> bool:
        return len(self.pieces) > 1

    def digest(self) -> PieceDigest:
        return PieceDigest(self.whole)

    def stored_piece(self, answer: Any, digest: PieceDigest) -> WrittenFile:
        """Takes the answer to a piece's PUT, checked against what was sent."""
        written = check_written(answer, digest.piece.hexdigest())
        self.stored.append(written)
        self.whole = digest.whole
        return written

    def join(self) -> str:
        """The command that makes the file of the stored pieces, in order."""
        parts = " ".join(shlex.quote(w.path) for w in self.stored)
        where = posixpath.dirname(self.stored[0].path)
        joining = shlex.quote(posixpath.join(where, posixpath.basename(self.joined_at)))
        target = shlex.quote(self.target)
        return (
            f"set -e; trap 'rm -f -- {joining} {parts}' EXIT; cat -- {parts} > {joining}; "
            f'[ "$(sha256sum < {joining})" = "{self.whole.hexdigest()}  -" ] || '
            "{ echo 'the joined file is not the one sent' >&2; exit 1; }; "
            f"mv -f -- {joining} {target}"
        )

    @property
    def target(self) -> str:
        return posixpath.join(posixpath.dirname(self.stored[0].path), self.name)

    def joined(self, result: CommandResult) -> WrittenFile:
        if not result.ok:
            raise errors.TetherError(
                f"Joining the uploaded parts of {self.remote} failed: "
                f"{result.stderr.strip()[-300:] or result.exit_code}",
                code="UPLOAD_FAILED",
            )
        return WrittenFile(path=self.target, size=self.size, sha256=self.whole.hexdigest())


def preview_url(session_id: str, port: int, expires_in: int) -> Call:
    body = {"port": port, "expires_in": expires_in}
    return Call("POST", session_path(session_id, "preview-urls"), json=body)


def port_url(base_url: str, session_id: str, port: int) -> str:
    """The URL of the workspace's `port` through the API (the caller's credential needed)."""
    return f"{base_url.rstrip('/')}{session_path(session_id, 'ports', str(int(port)))}/"


def sessions_of(answer: Any) -> tuple[list[SessionInfo], str | None]:
    """A list page's sessions and the cursor of the page after it (None: the last)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("sessions"), list):
        raise errors.TetherError("The server's answer is not a list of sessions",
                                 code="BAD_ANSWER")  # fmt: skip
    cursor = answer.get("next_cursor")
    found = [parse(SessionInfo, s) for s in answer["sessions"]]
    return found, cursor if isinstance(cursor, str) and cursor else None


def processes_of(answer: Any) -> list[ProcessInfo]:
    items = answer.get("processes") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise errors.TetherError("The server's answer is not a list of processes",
                                 code="BAD_ANSWER")  # fmt: skip
    return [parse(ProcessInfo, p) for p in items]


def entries_of(answer: Any) -> list[FileInfo]:
    items = answer.get("entries") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise errors.TetherError("The server's answer is not a directory listing",
                                 code="BAD_ANSWER")  # fmt: skip
    return [parse(FileInfo, e) for e in items]


class _Text(BaseModel):
    data: str


class _Exit(BaseModel):
    exit_code: int
    timed_out: bool = False
    duration_ms: float = 0.0


class Output:
    """Collects one command's `stdout`/`stderr`/`exit` events into its `CommandResult`,
    handing each piece of text to its callback as it comes."""

    def __init__(
        self,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> None:
        self.callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self.text: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.exit: _Exit | None = None

    def feed(self, event: str, data: str) -> object:
        """Takes one event; returns what its callback returned (the async client awaits an
        awaitable). Events of kinds this SDK does not know are skipped."""
        try:
            if event in self.text:
                text = _Text.model_validate_json(data).data
                self.text[event].append(text)
                callback = self.callbacks[event]
                return callback(text) if callback is not None else None
            if event == "exit":
                self.exit = _Exit.model_validate_json(data)
        except ValidationError:
            raise errors.TetherError(f"The server sent a {event} event that is not one",
                                     code="BAD_ANSWER") from None  # fmt: skip
        return None

    def result(self) -> CommandResult:
        if self.exit is None:
            raise errors.Unavailable(
                "The command's output stream ended before its exit status (the connection "
                "was lost, or the session stopped)",
                code="STREAM_ENDED",
            )
        return CommandResult(
            stdout="".join(self.text["stdout"]),
            stderr="".join(self.text["stderr"]),
            **self.exit.model_dump(),
        )


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
