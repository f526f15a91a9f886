"""Synchronous client. `with client.session(...) as s:` deletes the session on exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import tenacity

from tether.sdk import calls
from tether.sdk.calls import Call


class Session:
    """A handle on one session (or legacy workspace) that runs commands in it."""

    def __init__(self, client: Client, info: dict[str, Any], legacy: bool = False) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]
        self.legacy = legacy

    def execute(self, command: str, timeout: float = 120, **options: Any) -> dict[str, Any]:
        """Runs `command`; `options` (env, cwd) are the unified API's."""
        if self.legacy:
            return self.client.execute_workspace(self.id, command, timeout)
        return self.client.execute_session(self.id, command, timeout, **options)

    def run_python(self, code: str, timeout: float = 120) -> dict[str, Any]:
        return self.client.run_python(self.id, code, timeout)

    def refresh(self) -> dict[str, Any]:
        self.info = self.client.get_session(self.id)
        return self.info

    def delete(self) -> dict[str, Any]:
        return self.client.delete_session(self.id)


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            transport=transport, **calls.client_options(base_url, api_key, timeout)
        )

    def _do(self, call: Call) -> Any:
        for attempt in tenacity.Retrying(**calls.retry_policy(call)):
            with attempt:
                response = self._http.request(call.method, call.path, **calls.request_options(call))
        return calls.result(response)

    # -- unified API -----------------------------------------------------------------------------

    def create_session(
        self, spec: dict[str, Any] | None = None, idempotency_key: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        call = calls.create_session({**(spec or {}), **kw}, idempotency_key)
        result: dict[str, Any] = self._do(call)
        return result

    def get_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.get_session(session_id))
        return result

    def list_sessions(
        self, namespace: str | None = None, user: str | None = None
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._do(calls.list_sessions(namespace, user))["sessions"]
        return result

    def execute_session(
        self,
        session_id: str,
        command: str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> dict[str, Any]:
        """Runs `command` with `env` added to the workspace's variables, in `cwd` (relative to
        the home)."""
        call = calls.execute_session(session_id, command, timeout, env, cwd)
        result: dict[str, Any] = self._do(call)
        return result

    def delete_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.delete_session(session_id))
        return result

    def connect_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.connect_session(session_id))
        return result

    @contextmanager
    def session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "default",
        provider: str = "auto",
        ttl_minutes: int | None = None,
        long_lived: bool = False,
    ) -> Iterator[Session]:
        spec = calls.session_spec(template, namespace, user, provider, ttl_minutes, long_lived)
        handle = Session(self, self.create_session(spec))
        try:
            yield handle
        finally:
            self.delete_session(handle.id)

    # -- legacy Cloud Run API --------------------------------------------------------------------

    def create_workspace(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._do(
            calls.create_workspace(template, namespace, user, ttl_minutes)
        )
        return result

    def _action(self, workspace_id: str, action: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.workspace_action(workspace_id, action, params))
        return result

    def execute_workspace(
        self, workspace_id: str, command: str, timeout: float = 120
    ) -> dict[str, Any]:
        return self._action(workspace_id, "execute", command=command, timeout=timeout)

    def run_python(self, workspace_id: str, code: str, timeout: float = 120) -> dict[str, Any]:
        return self._action(workspace_id, "runpython", code=code, timeout=timeout)

    def run_shell(self, workspace_id: str, command: str, timeout: float = 120) -> dict[str, Any]:
        return self._action(workspace_id, "runsh", command=command, timeout=timeout)

    def delete_workspace(self, workspace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.delete_workspace(workspace_id))
        return result

    @contextmanager
    def cloudrun_workspace_session(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> Iterator[Session]:
        handle = Session(
            self, self.create_workspace(template, namespace, user, ttl_minutes), legacy=True
        )
        try:
            yield handle
        finally:
            self.delete_workspace(handle.id)

    def health(self) -> dict[str, Any]:
        """The health report, healthy or not (an unhealthy server answers 503 with it)."""
        response = self._http.get(calls.health().path)
        return calls.health_report(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
