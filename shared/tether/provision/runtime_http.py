"""The workspace runtime's HTTP API (`POST /exec`, `GET /logs`, `GET /activity`;
`tether.runtime.server`) as the
cloud provisioners call it: a workspace at a URL, its answers in Tether's error tree; and the
ID tokens a private Cloud Run workspace wants from its callers (the agent, the relay).

httpx and google.auth are imported on first use, so importing a provisioner loads neither.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tether import tracing
from tether.core.models import ExecResult, WorkspaceActivity
from tether.errors import Forbidden, Invalid, Unavailable

if TYPE_CHECKING:
    import httpx

MARGIN = 30.0  # seconds allowed beyond a command's own timeout, which the runtime enforces
ACTIVITY_WAIT = 10.0  # seconds a runtime has to say what it is doing
MAX_ACTIVITY = 4096  # bytes of that answer read (it is a few dozen)

IdToken = Callable[[str], str | None]  # audience (a service URL) -> token, None: send none


class RuntimeHttp:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(follow_redirects=False)
            return self._client

    def exec(
        self, base: str, command: str, timeout: float, headers: dict[str, str] | None = None
    ) -> ExecResult:
        """Runs `command`; a workspace that does not answer in time is a timed-out result (as
        the Provisioner port asks), one that cannot be reached is Unavailable."""
        import httpx

        started = time.perf_counter()
        try:
            with _called("POST", "/exec", headers) as sent:
                response = self._http().post(
                    f"{base}/exec",
                    json={"command": command, "timeout": timeout},
                    headers=sent,
                    timeout=httpx.Timeout(timeout + MARGIN, connect=5),
                )
                tracing.annotate({"http.response.status_code": response.status_code})
        except httpx.TimeoutException:
            return ExecResult(
                stderr=f"[tether: the workspace did not answer within {timeout + MARGIN:g}s]",
                returncode=124,
                success=False,
                timed_out=True,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"Workspace runtime did not answer: {exc}") from exc
        try:
            return ExecResult.model_validate(_body(response))
        except ValueError as exc:  # pydantic's ValidationError included
            raise Unavailable(f"Workspace runtime answered nonsense: {exc}") from exc

    def logs(
        self, base: str, tail: int, headers: dict[str, str] | None = None, timeout: float = MARGIN
    ) -> list[str]:
        """The last `tail` lines of the session log; Unavailable when the runtime cannot say."""
        import httpx

        try:
            with _called("GET", "/logs", headers) as sent:
                response = self._http().get(
                    f"{base}/logs", params={"tail": tail}, headers=sent, timeout=timeout
                )
                tracing.annotate({"http.response.status_code": response.status_code})
        except httpx.HTTPError as exc:
            raise Unavailable(f"Workspace runtime did not answer: {exc}") from exc
        lines = _body(response).get("lines")
        if not isinstance(lines, list):
            raise Unavailable("Workspace runtime answered nonsense to /logs")
        return [str(line) for line in lines]

    def activity(
        self, base: str, headers: dict[str, str] | None = None
    ) -> WorkspaceActivity | None:
        """What the runtime says it is doing; None when it cannot be reached or says nonsense
        (its answer read up to `MAX_ACTIVITY` bytes: the workspace's words)."""
        import httpx

        try:
            with (
                _called("GET", "/activity", headers) as sent,
                self._http().stream(
                    "GET", f"{base}/activity", headers=sent, timeout=ACTIVITY_WAIT
                ) as response,
            ):
                tracing.annotate({"http.response.status_code": response.status_code})
                if response.status_code != 200:
                    return None
                body = b""
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > MAX_ACTIVITY:
                        return None
        except httpx.HTTPError:
            return None
        return read_activity(body)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@contextlib.contextmanager
def _called(method: str, path: str, headers: dict[str, str] | None) -> Iterator[dict[str, str]]:
    """A client span for one call to a runtime, yielding the call's headers with the trace
    (`traceparent`) added. The span names the call, never its credential or its body."""
    said = {"http.request.method": method, "url.path": path, "tether.runtime": "http"}
    with tracing.span(f"runtime {method} {path}", "client", said):
        yield {**(headers or {}), **tracing.headers()}


def read_activity(body: object) -> WorkspaceActivity | None:
    """A runtime's `/activity` answer (JSON bytes, or decoded), or None for nonsense."""
    try:
        if isinstance(body, bytes | str):
            return WorkspaceActivity.model_validate_json(body)
        return WorkspaceActivity.model_validate(body)
    except ValueError:  # pydantic's ValidationError included
        return None


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if response.status_code == 400:
        raise Invalid(str(detail or "the workspace runtime refused the request"))
    if response.status_code in (401, 403):
        raise Forbidden("the workspace refused the agent's credential")
    if response.status_code != 200 or not isinstance(body, dict):
        raise Unavailable(f"Workspace runtime answered {response.status_code}: {detail or ''}")
    return body


class GoogleIdTokens:
    """ID tokens for calling private Cloud Run services: one self-refreshing credential per
    audience (a service URL), from the agent's own identity."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._creds: dict[str, Any] = {}

    def __call__(self, audience: str) -> str | None:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        try:
            with self._lock:
                request = Request()
                creds = self._creds.get(audience)
                if creds is None:
                    creds = id_token.fetch_id_token_credentials(  # type: ignore[no-untyped-call]
                        audience, request=request
                    )
                    self._creds[audience] = creds
                if not creds.valid:
                    creds.refresh(request)
                return str(creds.token)
        except GoogleAuthError as exc:
            raise Unavailable(f"no identity to call the workspace with: {exc}") from exc
